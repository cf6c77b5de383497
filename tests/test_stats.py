"""The intervals behind the verdicts cover a known answer on simulated data of the shape
they meet (clustered heads, clustered paired answers, a few seeds), including the case
where nothing changes."""

import numpy as np
import pytest

from ropedim import stats
from ropedim.verdict import INCONCLUSIVE, Criterion, judge


def _coverage(draw, truth, reps):
    hits = 0
    for i in range(reps):
        est = draw(np.random.default_rng(1000 + i), i)
        hits += est.low <= truth <= est.high
    return hits / reps


def _clustered_answers(rng, n_q, m, p_base, p_new, r, icc):
    """Paired 0/1 answers [questions, positions]: a share ``r`` of the answers is redrawn at
    accuracy ``p_new`` (true change r·(p_new − p_base)); with probability ``icc`` a question
    redraws all its positions or none (the change is correlated within a question)."""
    base = (rng.random((n_q, m)) < p_base).astype(float)
    redraw = rng.random((n_q, m)) < r
    together = rng.random(n_q) < icc
    redraw = np.where(together[:, None], redraw[:, :1], redraw)
    new = np.where(redraw, (rng.random((n_q, m)) < p_new).astype(float), base)
    return base, new


@pytest.mark.parametrize("p_new, icc", [(0.6, 0.0), (0.3, 0.0), (0.3, 0.9), (0.7, 0.5)])
def test_paired_proportion_interval_covers(p_new, icc):
    """Tango's interval with the design effect covers the true change ~95% of the time,
    also when the positions of a question move together (where a pair-level interval would
    be too narrow)."""
    n_q, m, p, r = 60, 3, 0.6, 0.3
    truth = r * (p_new - p)

    def draw(rng, i):
        return stats.paired_proportion_difference(*_clustered_answers(rng, n_q, m, p, p_new, r, icc))

    cov = _coverage(draw, truth, 300)
    assert 0.9 <= cov <= 0.995, cov


def test_paired_proportion_interval_never_collapses():
    base = (np.random.default_rng(0).random((30, 3)) < 0.5).astype(float)
    est = stats.paired_proportion_difference(base, base)
    assert est.value == 0 and est.low < 0 < est.high and est.high - est.low > 0.05
    assert est.extra["discordant_pairs"] == 0


def test_cluster_bootstrap_covers_with_layer_effects():
    """Heads share their layer's effect: a bootstrap over layers covers the mean, one over
    heads would be too narrow."""
    L, H = 24, 9

    def draw(rng, i):
        x = rng.normal(0, 1, (L, 1)) + rng.normal(0, 0.3, (L, H))  # a layer effect dominates
        return stats.cluster_bootstrap(L, lambda idx: x[idx].mean(), n_boot=400, seed=i)

    assert 0.88 <= _coverage(draw, 0.0, 200) <= 1.0

    def naive(rng, i):
        x = rng.normal(0, 1, (L, 1)) + rng.normal(0, 0.3, (L, H))
        return stats.mean_ci(x.ravel(), n_boot=400, seed=i)

    assert _coverage(naive, 0.0, 200) < 0.75  # heads as if independent: far too narrow


def test_t_interval_over_seeds_covers():
    assert 0.9 <= _coverage(lambda rng, i: stats.t_interval(rng.normal(1.0, 0.5, 5)), 1.0, 400) <= 0.99


def test_null_quantiles_of_a_curve_without_order():
    ranks = np.repeat(np.arange(32), 2)  # a 64-dim head: the two coordinates of a pair tie
    q = stats.spearman_null_quantiles(ranks, n_perm=4000)
    assert 0.15 < q[0.95] < q[0.99] < 0.4


def test_inconclusive_says_why():
    under = judge(stats.Estimate(0.2, -0.05, 0.45, n=30, unit="questions"), Criterion("greater", 0.0))
    assert under.outcome == INCONCLUSIVE and under.cause == "underpowered" and under.n_needed == 47
    near = judge(stats.Estimate(0.01, -0.2, 0.22, n=30, unit="questions"), Criterion("greater", 0.0))
    assert near.cause == "near the threshold" and near.n_needed is None
    # a skewed interval (qwen2.5-1.5b's B-critical utility row): the side facing the bar sets the n,
    # so the n that would decide it always exceeds the n that did not
    skew = judge(stats.Estimate(-0.469, -0.531, 0.141, n=28, unit="layers"), Criterion("within", (-0.125, 0.125)))
    assert skew.cause == "underpowered" and skew.n_needed == 89 > 28
    pre = judge(stats.Estimate(1.0, 0.5, 1.5, precondition="floor"), Criterion("greater", 0.0))
    assert pre.cause == "precondition" and pre.reason == "floor"
