"""Every LLM claim test has a control that makes it fail: an untrained model of the
same architecture as the real one, run through the same measure and criterion, and
planted QA runs (``ropedim.qa.study.QARun`` test doubles) holding the numbers a control
would give."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from claims.table import CHECKS, QA, Weights
from ropedim import models
from ropedim.anatomy import anatomy_of
from ropedim.measures import MEASURES
from ropedim.qa.analysis import HeadScores
from ropedim.qa.config import QAConfig
from ropedim.verdict import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, judge


@pytest.fixture(scope="module")
def random_smollm2():
    """SmolLM2-135M's architecture with seeded random weights (no training, no RoPE
    structure)."""
    from transformers import AutoModelForCausalLM
    cfg = models.load_cached("smollm2").model.config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    return models.Loaded("random-smollm2", model, None, anatomy_of(model), "tiny", "plain")


def _judge(check, data):
    return judge(MEASURES[check.measure](data, seed=0, **check.args).estimate, check.criterion)


@pytest.mark.parametrize("check", [c for c in CHECKS if isinstance(c.subject, Weights) and not c.args["scaled"]],
                         ids=lambda c: c.test_id("random-smollm2"))
def test_c5a_is_not_supported_on_an_untrained_model(check, random_smollm2):
    assert _judge(check, random_smollm2).outcome == NOT_SUPPORTED


# --- §5.2-5.4: planted QA runs -------------------------------------------------------

@dataclass
class PlantedQA:
    loaded: models.Loaded
    scores: HeadScores
    correct: dict
    cfg: QAConfig = field(default_factory=lambda: QAConfig(task="synthetic", k=10))  # positions 1, 5, 10

    def head_scores(self):
        return self.scores

    def correctness(self):
        return self.correct

    def mode_check(self):
        return []


MASK_NAMES = ("none", "utility", "first16", "first32", "last16", "last32")


def _correct(rng, acc, n=200):
    return {v: (rng.random((3, n)) < acc.get(v, acc["none"])).astype(float) for v in MASK_NAMES}


def _planted(loaded, acc, retrieval_head=False, seed=0):
    a = loaded.anatomy
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(a.n_layers, a.n_heads, a.head_dim, generator=g)  # no trend over θ rank
    retrieval = torch.rand(a.n_layers, a.n_heads, generator=g)  # unrelated to u
    if retrieval_head:
        retrieval[0, 0] = 0.9  # at least one retrieval head, so the masks have somewhere to go
    z = torch.zeros(a.n_layers, a.n_heads)
    return PlantedQA(loaded, HeadScores(retrieval, u, z.bool(), z, 8), _correct(np.random.default_rng(seed), acc))


def _synthetic(claims):
    return [c for c in CHECKS if c.claim in claims and c.subject == QA("synthetic")]


@pytest.mark.parametrize("check", _synthetic(("C5b", "C5d", "C-Fig4")), ids=lambda c: c.test_id("planted"))
def test_score_claims_fail_on_unrelated_scores(check, random_smollm2):
    """Utility with no θ trend and retrieval scores unrelated to it: C5b, C5d and Fig. 4
    must not come out supported."""
    assert _judge(check, _planted(random_smollm2, {"none": 0.6})).outcome != SUPPORTED


# what each accuracy claim must not survive: the opposite of what it asserts
PLANTED_ACCURACY = {
    "utility": {"none": 0.6, "utility": 0.3},  # masking low-utility dims halves accuracy
    "first16": {"none": 0.6, "first16": 0.3},
    "first32": {"none": 0.6, "first32": 0.3},
    "last16": {"none": 0.6},  # masking the last dims changes nothing
    "last32": {"none": 0.6},
}


@pytest.mark.parametrize("check", _synthetic(("C5c", "C5e", "C5f")), ids=lambda c: c.test_id("planted"))
def test_accuracy_claims_fail_on_planted_opposites(check, random_smollm2):
    qa = _planted(random_smollm2, PLANTED_ACCURACY[check.args["mask"].name], retrieval_head=True)
    assert _judge(check, qa).outcome != SUPPORTED


@pytest.mark.parametrize("check", _synthetic(("C5c", "C5e", "C5f")), ids=lambda c: c.test_id("weak"))
def test_accuracy_claims_are_inconclusive_on_a_model_that_answers_nothing(check, random_smollm2):
    assert _judge(check, _planted(random_smollm2, {"none": 0.02})).outcome == INCONCLUSIVE
