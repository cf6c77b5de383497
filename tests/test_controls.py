"""Every LLM claim test has a control that makes it fail: an untrained model of the
same architecture as the real one, run through the same measure and criterion."""

import pytest
import torch

from claims.table import CHECKS
from ropedim import models
from ropedim.anatomy import anatomy_of
from ropedim.measures import MEASURES
from ropedim.verdict import NOT_SUPPORTED, judge


@pytest.fixture(scope="module")
def random_smollm2():
    """SmolLM2-135M's architecture with seeded random weights (no training, no RoPE
    structure)."""
    from transformers import AutoModelForCausalLM
    cfg = models.load_cached("smollm2").model.config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    return models.Loaded("random-smollm2", model, None, anatomy_of(model), "tiny", "plain")


@pytest.mark.parametrize("check", [c for c in CHECKS if c.claim == "C5a" and not c.params["scaled"]],
                         ids=lambda c: c.test_id("random-smollm2"))
def test_c5a_is_not_supported_on_an_untrained_model(check, random_smollm2):
    est, _ = MEASURES[check.measure](random_smollm2, seed=0, **check.params)
    assert judge(est, check.criterion).outcome == NOT_SUPPORTED, est
