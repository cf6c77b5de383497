"""Every LLM claim test has a control that makes it fail: an untrained model of the
same architecture as the real one, run through the same measure and criterion, and
planted QA runs (``ropedim.qa.study.QARun`` test doubles) holding the numbers a control
would give."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from claims.table import CHECKS, MASKS, QA
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


@pytest.mark.parametrize("check", [c for c in CHECKS if c.claim == "C5a" and not c.args["scaled"]],
                         ids=lambda c: c.test_id("random-smollm2"))
def test_c5a_fails_on_an_untrained_model(check, random_smollm2):
    """The measured null: an untrained model's curve does not rise above the null's 99th
    percentile (its statistic lies within the null)."""
    v = _judge(check, random_smollm2)
    est = MEASURES[check.measure](random_smollm2, seed=0, **check.args).estimate
    assert v.outcome != SUPPORTED and est.value < est.null[0.99]


def test_c2_fails_on_a_rotation_that_reads_absolute_positions(monkeypatch):
    """Eq. 2's check on a RoPE whose rotation also scales by the position: not supported."""
    from ropedim import measures, rope
    rotate = rope.rotate
    broken = lambda x, pos, theta: rotate(x, pos, theta) * (1 + pos.float()[..., None] / 4096)
    monkeypatch.setattr(measures.R, "rotate", broken)
    monkeypatch.setattr(measures.R, "apply_half_split", broken)
    check = next(c for c in CHECKS if c.claim == "C2")
    assert _judge(check, None).outcome == NOT_SUPPORTED


# --- §5.2-5.4: planted QA runs -------------------------------------------------------

@dataclass
class PlantedQA:
    loaded: models.Loaded
    scores: HeadScores
    correct: dict  # mode -> {mask: [positions, questions]}
    cfg: QAConfig = field(default_factory=lambda: QAConfig(task="synthetic", k=10, mode="faithful"))  # positions 1, 5, 10
    modes: list = field(default_factory=list)  # ModeAgreement rows

    def head_scores(self, reading="literal"):
        return self.scores

    def correctness(self, mode, names=None):
        return self.correct[mode]

    def mode_of(self, mode):
        return mode if self.cfg.mode == "table" else self.cfg.mode

    def mode_check(self):
        return self.modes


MASK_NAMES = ("none", *MASKS)


def _correct(rng, acc, n=200):
    return {v: (rng.random((3, n)) < acc.get(v, acc["none"])).astype(float) for v in MASK_NAMES}


def _planted(loaded, acc, retrieval_head=False, seed=0, **kw):
    a = loaded.anatomy
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(a.n_layers, a.n_heads, a.head_dim, generator=g)  # no trend over θ rank
    retrieval = torch.rand(8, a.n_layers, a.n_heads, generator=g)  # unrelated to u, per example
    if retrieval_head:
        retrieval[:, 0, 0] = 0.9  # at least one retrieval head, so the masks have somewhere to go
    z = torch.zeros(a.n_layers, a.n_heads)
    scores = HeadScores(retrieval.mean(0), retrieval, z, u, z.bool(), z, 8, "literal")
    correct = _correct(np.random.default_rng(seed), acc)
    return PlantedQA(loaded, scores, {"faithful": correct, "fast": correct}, **kw)


def _synthetic(claims):
    return [c for c in CHECKS if c.claim in claims and c.subject == QA("synthetic")]


@pytest.mark.parametrize("check", _synthetic(("C5b", "C5d", "C-Fig4")), ids=lambda c: c.test_id("planted"))
def test_score_claims_fail_on_unrelated_scores(check, random_smollm2):
    """Utility with no θ trend and retrieval scores unrelated to it: C5b, C5d and Fig. 4
    (and their confound checks) must not come out supported."""
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


def test_no_harm_guards(random_smollm2):
    """A mask that changes no answer cannot support C5e; nor can one that masks almost nothing."""
    check = next(c for c in _synthetic(("C5e",)) if c.variant.startswith("first16"))
    qa = _planted(random_smollm2, {"none": 0.6}, retrieval_head=True)
    for mode in qa.correct.values():
        mode["first16"] = mode["none"].copy()  # no answer changes
    v = _judge(check, qa)
    assert v.outcome == INCONCLUSIVE and v.cause == "precondition" and "changed no answer" in v.reason
    qa = _planted(random_smollm2, {"none": 0.6})  # no head above 0.5: a mask with nothing to mask
    qa.scores.retrieval[:] = 0.1
    v = _judge(check, qa)
    assert v.outcome == INCONCLUSIVE and "masks almost nothing" in v.reason


def test_position_retention_is_inconclusive_at_the_floor(random_smollm2):
    """Masking floors accuracy at every position: the gap of accuracy changes would be the
    unmasked primacy effect; retention says inconclusive (floor)."""
    check = next(c for c in _synthetic(("C5f",)) if "position" in c.variant)
    qa = _planted(random_smollm2, {"none": 0.6, "last16": 0.0}, retrieval_head=True)
    v = _judge(check, qa)
    assert v.outcome == INCONCLUSIVE and "floor" in v.reason


def test_an_unverified_fast_mode_falls_back_to_faithful_or_is_inconclusive(random_smollm2):
    """A run in fast mode whose faithful − fast gap (the mode check) exceeds the table's
    tolerance: the verdict is computed in faithful mode, or is inconclusive."""
    from ropedim.qa.mode_check import ModeAgreement
    check = next(c for c in _synthetic(("C5e",)) if c.variant.startswith("first16"))
    qa = _planted(random_smollm2, {"none": 0.6}, retrieval_head=True,
                  cfg=QAConfig(task="synthetic", k=10, fallback="faithful"))  # C5e asks for fast mode
    qa.correct["fast"] = _correct(np.random.default_rng(1), {"none": 0.6, "first16": 0.1})  # fast: a collapse
    faithful = _correct(np.random.default_rng(2), {"none": 0.6})  # faithful: no harm (a few answers change)
    faithful["first16"] = faithful["none"].copy()
    faithful["first16"][0, :10] = 1 - faithful["first16"][0, :10]
    qa.correct["faithful"] = faithful
    qa.modes = [ModeAgreement("first16", 200, 10.0, 60.0, 50.0, 45.0, 55.0, 0.5, 0.3)]  # the gap it measured
    m = MEASURES[check.measure](qa, seed=0, **check.args)
    assert m.mode == "faithful (fast not verified)" and judge(m.estimate, check.criterion).outcome == SUPPORTED
    qa.cfg = QAConfig(task="synthetic", k=10, fallback="inconclusive")
    m = MEASURES[check.measure](qa, seed=0, **check.args)
    v = judge(m.estimate, check.criterion)
    assert m.mode == "fast" and v.outcome == INCONCLUSIVE and "fast mode not verified" in v.reason
    qa.modes = [ModeAgreement("first16", 200, 60.0, 60.5, 0.5, -1.0, 2.0, 0.97, 0.9)]  # verified: fast stands
    qa.correct["fast"] = qa.correct["faithful"]
    m = MEASURES[check.measure](qa, seed=0, **check.args)
    assert m.mode == "fast" and judge(m.estimate, check.criterion).outcome == SUPPORTED
