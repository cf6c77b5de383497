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


# --- §5.2-5.4: planted controls for the QA claims -----------------------------------
# A stand-in for ropedim.study.Study holding the numbers a control would give: the
# measures and criteria are the real ones from the claims table.

class PlantedStudy:
    def __init__(self, loaded, u, retrieval, correct):
        self.loaded, self.model = loaded, loaded.model
        self.scores = {"utility": u, "retrieval": retrieval}
        self._correct = correct
        self.retrieval_threshold, self.utility_threshold = 0.5, 0.5
        self.cfg = type("Cfg", (), {"task": "planted", "positions": (0, 4, 9)})()

    @property
    def retrieval_heads(self):
        return [tuple(x) for x in (self.scores["retrieval"] > 0.5).nonzero().tolist()]

    def correct_all(self):
        return self._correct


def _correct(rng, acc, n=200, variants=("none", "utility", "first16", "first32", "last16", "last32")):
    return {v: (rng.random((3, n)) < acc.get(v, acc["none"])).astype(float) for v in variants}


@pytest.fixture(scope="module")
def planted(random_smollm2):
    import numpy as np
    a = random_smollm2.anatomy
    g = torch.Generator().manual_seed(0)
    u = torch.rand(a.n_layers, a.n_heads, a.head_dim, generator=g)  # no trend over θ rank
    retrieval = torch.rand(a.n_layers, a.n_heads, generator=g)  # unrelated to u
    rng = np.random.default_rng(0)
    return u, retrieval, rng


def _judge(check, study):
    est, _ = MEASURES[check.measure](study, seed=0, **check.params)
    return judge(est, check.criterion, est.extra.get("precondition"))


QA_CHECKS = [c for c in CHECKS if c.claim in ("C5b", "C5d", "C-Fig4") and c.params.get("task") == "synthetic"]


@pytest.mark.parametrize("check", QA_CHECKS, ids=lambda c: c.test_id("planted"))
def test_score_claims_fail_on_unrelated_scores(check, random_smollm2, planted):
    """Utility with no θ trend and retrieval scores unrelated to it: C5b, C5d and Fig. 4
    must not come out supported."""
    u, retrieval, rng = planted
    study = PlantedStudy(random_smollm2, u, retrieval, _correct(rng, {"none": 0.6}))
    assert _judge(check, study).outcome != "supported"


ACC_CHECKS = [c for c in CHECKS if c.claim in ("C5c", "C5e", "C5f") and c.params.get("task") == "synthetic"]
# what each accuracy claim must not survive: the opposite of what it asserts
PLANTED_ACCURACY = {
    "utility": {"none": 0.6, "utility": 0.3},  # masking low-utility dims halves accuracy
    "first16": {"none": 0.6, "first16": 0.3},
    "first32": {"none": 0.6, "first32": 0.3},
    "last16": {"none": 0.6},  # masking the last dims changes nothing
    "last32": {"none": 0.6},
}


@pytest.mark.parametrize("check", ACC_CHECKS, ids=lambda c: c.test_id("planted"))
def test_accuracy_claims_fail_on_planted_opposites(check, random_smollm2, planted):
    u, retrieval, rng = planted
    retrieval = retrieval.clone()
    retrieval[0, 0] = 0.9  # one retrieval head, so the masks have somewhere to go
    acc = PLANTED_ACCURACY[check.params["variant"]]
    study = PlantedStudy(random_smollm2, u, retrieval, _correct(rng, acc))
    assert _judge(check, study).outcome != "supported"


@pytest.mark.parametrize("check", ACC_CHECKS, ids=lambda c: c.test_id("weak"))
def test_accuracy_claims_are_inconclusive_on_a_model_that_answers_nothing(check, random_smollm2, planted):
    u, retrieval, rng = planted
    study = PlantedStudy(random_smollm2, u, retrieval, _correct(rng, {"none": 0.02}))
    assert _judge(check, study).outcome == "inconclusive"
