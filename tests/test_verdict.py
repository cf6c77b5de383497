import numpy as np
import pytest

from ropedim import stats
from ropedim.verdict import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Criterion, judge


def est(v, lo, hi):
    return stats.Estimate(v, lo, hi)


@pytest.mark.parametrize("crit, e, outcome", [
    (Criterion("greater", 0.0), est(1, 0.5, 1.5), SUPPORTED),
    (Criterion("greater", 0.0), est(-1, -2, -0.1), NOT_SUPPORTED),
    (Criterion("greater", 0.0), est(0.1, -0.1, 0.3), INCONCLUSIVE),
    (Criterion("less", 2.2), est(1, 0.5, 1.5), SUPPORTED),
    (Criterion("less", 2.2), est(3, 2.5, 3.5), NOT_SUPPORTED),
    (Criterion("within", (-1.0, 1.0)), est(0, -0.5, 0.5), SUPPORTED),
    (Criterion("within", (-1.0, 1.0)), est(3, 2, 4), NOT_SUPPORTED),
    (Criterion("within", (-1.0, 1.0)), est(0.8, 0.5, 1.2), INCONCLUSIVE),
    (Criterion("greater", 0.0), est(float("nan"), float("nan"), float("nan")), INCONCLUSIVE),
])
def test_judge(crit, e, outcome):
    assert judge(e, crit).outcome == outcome


def test_precondition_forces_inconclusive():
    v = judge(est(1, 0.5, 1.5), Criterion("greater", 0.0), precondition="accuracy near zero")
    assert v.outcome == INCONCLUSIVE and "near zero" in v.reason


def test_bad_criteria_are_refused():
    with pytest.raises(ValueError):
        Criterion("bigger", 1.0)
    with pytest.raises(ValueError):
        Criterion("within", 1.0)


def test_mean_interval_covers_and_is_seeded():
    x = np.random.default_rng(0).normal(3.0, 1.0, 400)
    a, b = stats.mean_ci(x, seed=1), stats.mean_ci(x, seed=1)
    assert a.low < 3.0 < a.high and (a.low, a.high) == (b.low, b.high)


def test_mcnemar():
    a = np.array([1] * 50 + [0] * 50, bool)
    assert stats.mcnemar(a, a) == 1.0
    b = a.copy(); b[:20] = False  # 20 discordant, all one way
    assert stats.mcnemar(a, b) < 1e-5


def test_pearson_permutation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    strong = stats.pearson_test(x, x + 0.5 * rng.normal(size=200), n_perm=500)
    null = stats.pearson_test(x, rng.normal(size=200), n_perm=500)
    assert strong.p_value < 0.01 and strong.low > 0.7
    assert null.p_value > 0.01 and null.low < 0 < null.high


def test_spearman_monotone():
    assert stats.spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
