"""Beyond the paper, the critical dimension (ropedim.critical, issue 14): Liu et al.'s
prediction, the change-point estimator, the statistic, and the control: a no-RoPE toy,
which has no transition that moves with b and T, makes both checks fail."""

import numpy as np
import pytest

from claims.table import CHECKS
from ropedim import toy
from ropedim.critical import critical_statistic, predicted, transition
from ropedim.measures import MEASURES
from ropedim.profiles import PROFILES
from ropedim.verdict import NOT_SUPPORTED, SUPPORTED, judge

CRITICAL = {c.variant: c for c in CHECKS if c.claim == "B-critical"}


def test_liu_et_al_prediction():
    assert predicted(64, 1e4, 2048) == 42  # the reading of Fig. 1a: the step near dim 44
    assert predicted(128, 1e4, 4096) == 2 * int(np.ceil(64 * np.log(4096 / (2 * np.pi)) / np.log(1e4)))
    assert predicted(64, 1e6, 256) == 18 and predicted(64, 500, 2048) == 60
    assert predicted(64, 500, 16384) == 64  # every period fits: clamped to the head
    assert predicted(64, 1e4, 6) == 0  # T below one period of the fastest pair


def test_transition_finds_a_planted_step_and_a_sigmoid_midpoint():
    for s in (2, 18, 42, 62):
        curve = np.where(np.arange(64) < s, 0.6, 0.85)
        assert transition(curve) == s
    rng = np.random.default_rng(0)
    noisy = np.where(np.arange(64) < 28, 0.65, 0.8) + rng.normal(0, 0.03, 64)
    assert abs(transition(noisy) - 28) <= 2
    sig = 1 / (1 + np.exp(-(np.arange(64) - 40) / 2.0))
    assert abs(transition(sig) - 40) <= 2
    with pytest.raises(ValueError, match="even number"):
        transition(np.ones(7))


def _entries(measured_of):
    grid = CRITICAL["slope"].args["grid"]
    out = {}
    for b, t in grid:
        p = predicted(64, b, t)
        out[(b, t)] = {"predicted": p, "measured": [measured_of(p, s) for s in range(3)], "seeds": [0, 1, 2]}
    return out


def test_statistics_pass_on_tracking_and_fail_on_a_fixed_transition():
    tracking = _entries(lambda p, s: p + 2 * (s % 2))
    flat = _entries(lambda p, s: 30 + 2 * s)
    for variant, check in CRITICAL.items():
        assert judge(critical_statistic(tracking, variant, 64), check.criterion).outcome == SUPPORTED
        assert judge(critical_statistic(flat, variant, 64), check.criterion).outcome == NOT_SUPPORTED


def test_both_checks_fail_on_the_no_rope_toy(one_thread):
    """The control: the same measure on the no-RoPE heads (the smoke profile's toy, trained
    here) finds no transition that moves with b and T."""
    norope = toy.train(PROFILES["smoke"].toy, ropes=(False,), seeds=(0, 1, 2), progress=False, compile=False)
    runs = {"1": {"rope": [], "norope": norope}}
    for check in CRITICAL.values():
        m = MEASURES[check.measure](runs, seed=0, **{**check.args, "setup": "norope"})
        assert judge(m.estimate, check.criterion).outcome == NOT_SUPPORTED, check.key
        assert m.figure.subject == "toy (norope)"
