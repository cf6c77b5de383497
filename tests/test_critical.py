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

CRITICAL = {c.variant: c for c in CHECKS if c.claim == "B-critical" and c.measure == "critical_dimension"}


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
        # the smoke toy is too small to learn the task: count every cell to see the statistic itself fail
        m = MEASURES[check.measure](runs, seed=0, **{**check.args, "setup": "norope", "trained_below": None})
        assert judge(m.estimate, check.criterion).outcome == NOT_SUPPORTED, check.key
        assert m.figure.subject == "toy (norope)"
        m = MEASURES[check.measure](runs, seed=0, **{**check.args, "setup": "norope"})  # its cells left out
        assert judge(m.estimate, check.criterion).outcome != SUPPORTED and m.estimate.precondition


# --- the LLM rows: planted curves on a LLaMA-style anatomy --------------------------------

@pytest.fixture(scope="module")
def anatomy():
    """Eight layers of four 64-dim heads, base 10⁴, half-split storage (what ``llm_critical`` reads)."""
    from types import SimpleNamespace

    import torch

    from ropedim.rope import inv_freq, theta_rank_of_storage
    theta = inv_freq(64, 1e4)
    return SimpleNamespace(n_layers=8, n_heads=4, head_dim=64, theta=theta.expand(8, -1).clone(),
                           rank=theta_rank_of_storage(theta, 64).expand(8, -1).clone())


def _planted_values(anatomy, step_at):
    """[L, H, Dh] storage-order values whose θ-ordered curve steps at ``step_at`` coordinates."""
    import torch
    a = anatomy
    g = torch.Generator().manual_seed(0)
    paper_pos = torch.stack([torch.argsort(torch.argsort(r, stable=True)) for r in a.rank])  # [L, Dh]
    step = (paper_pos >= step_at).float()[:, None, :].expand(a.n_layers, a.n_heads, a.head_dim)
    return 0.5 + step + 0.05 * torch.randn(a.n_layers, a.n_heads, a.head_dim, generator=g)


def test_llm_rows_pass_at_d_c_and_fail_a_quarter_away(anatomy):
    from ropedim.critical import layer_predictions, llm_critical
    check = next(c for c in CHECKS if c.key == "B-critical-wq")
    dc = int(layer_predictions(anatomy, 2048)[0])
    assert dc == predicted(64, 1e4, 2048) == 42  # Liu et al.'s count from the layers' own θ
    est, fig = llm_critical(_planted_values(anatomy, dc), anatomy, 2048, "planted")
    assert judge(est, check.criterion).outcome == SUPPORTED and fig.predicted == [dc]
    est, _ = llm_critical(_planted_values(anatomy, dc - 16), anatomy, 2048, "planted")  # a quarter early
    assert judge(est, check.criterion).outcome == NOT_SUPPORTED


def test_a_curve_that_falls_is_not_located(anatomy):
    """Gemma 3's raw W_q rows fall with θ rank: the change point of a falling curve is not
    where it rises, so the row is inconclusive (precondition), not a miss of d_c."""
    from ropedim.critical import layer_predictions, llm_critical
    from ropedim.verdict import INCONCLUSIVE
    check = next(c for c in CHECKS if c.key == "B-critical-wq")
    dc = int(layer_predictions(anatomy, 2048)[0])
    falling = 2.0 - _planted_values(anatomy, dc - 16)  # steps down a quarter early
    est, _ = llm_critical(falling, anatomy, 2048, "planted")
    v = judge(est, check.criterion)
    assert v.outcome == INCONCLUSIVE and v.cause == "precondition" and "falls" in v.reason
    assert est.extra["groups"][0]["rises"] is False


def test_a_sliding_window_layer_is_predicted_from_its_window(anatomy):
    """Gemma 3's local layers see 512 tokens of a 32768 context: their T is the window (the
    primary span); the alternative gives every layer the context. A planted curve that steps
    at the window's d_c passes under the primary and fails under the context reading."""
    from types import SimpleNamespace

    from ropedim.critical import layer_predictions, layer_spans, llm_critical
    check = next(c for c in CHECKS if c.key == "B-critical-wq")
    local = SimpleNamespace(**vars(anatomy), sliding_window=[512] * 6 + [None] * 2)
    assert layer_spans(local, 32768).tolist() == [512] * 6 + [32768] * 2
    assert layer_spans(local, 32768, "context").tolist() == [32768] * 8
    assert layer_spans(anatomy, 2048).tolist() == [2048] * 8  # no windows: both spans agree
    pred = layer_predictions(local, 32768)
    assert pred[0] == predicted(64, 1e4, 512) < pred[-1] == predicted(64, 1e4, 32768)
    values = _planted_values(local, int(pred[0]))
    values[6:] = _planted_values(local, int(pred[-1]))[6:]
    est, fig = llm_critical(values, local, 32768, "planted")
    assert judge(est, check.criterion).outcome == SUPPORTED and est.extra["groups"][0]["T"] == [512]
    alt = {**check.args, **next(iter(check.alternatives.values()))}
    est, _ = llm_critical(values, local, 32768, "planted", span=alt["span"])
    assert judge(est, check.criterion).outcome == NOT_SUPPORTED
    with pytest.raises(ValueError, match="span must be one of"):
        layer_spans(local, 32768, "both")


def test_a_cell_whose_toy_did_not_learn_is_left_out_and_shown():
    """A cell's untrained toy (final loss near chance) steps anywhere: it is excluded from
    the statistic (said in the record), unless the alternative counts every cell."""
    from ropedim.critical import untrained
    tracking = _entries(lambda p, s: p + 2 * (s % 2))
    for k, e in tracking.items():
        e["final_train_loss"] = [0.02] * 3
    bad = next(iter(tracking))
    tracking[bad]["measured"] = [2, 60, 10]  # an untrained head's change point: anywhere
    tracking[bad]["final_train_loss"] = [4.7] * 3
    bar = 0.5 * np.log(200)
    assert untrained(tracking, bar) == {bad: 4.7} and untrained(tracking, None) == {}
    est = critical_statistic(tracking, "mae", 64, bar)
    assert est.extra["excluded"][0]["base"] == bad[0] and est.extra["max_final_loss"] == bar
    assert judge(est, CRITICAL["mae"].criterion).outcome == SUPPORTED
    assert critical_statistic(tracking, "mae", 64).value > est.value  # every cell: the untrained one counts
    for k in list(tracking)[1:]:
        tracking[k]["final_train_loss"] = [4.7] * 3
    left = critical_statistic({k: tracking[k] for k in list(tracking)[:2]}, "slope", 64, bar)
    assert left.precondition and np.isnan(left.value)
