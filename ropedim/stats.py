"""Statistics behind every verdict: intervals that respect how the data cluster, paired
tests, permutation tests and nulls.

All functions are seeded and return plain floats; intervals are at ``level`` (0.95 unless
said). An equivalence criterion ("within tolerance") is judged on the same 95% interval:
it must lie inside the tolerance band (conservative against the two one-sided tests at
5%, which need only the 90% interval).

Units. Heads of one layer are not independent: head-level statistics resample layers
(:func:`cluster_bootstrap`). Accuracy changes are paired per question, all gold positions
of a question together (:func:`paired_proportion_difference`: Tango's score interval,
widened by the design effect of that clustering; it does not collapse when no answer
changes). Trained toys replicate over seeds (:func:`t_interval`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

N_BOOT = 2000


@dataclass
class Estimate:
    """A measured statistic with its interval (and p-value where a test gives one)."""

    value: float
    low: float
    high: float
    level: float = 0.95
    p_value: float | None = None
    n: int | None = None  # sample size behind it, in ``unit``
    extra: dict = field(default_factory=dict)  # numbers the report shows beside it
    precondition: str | None = None  # why no verdict can be drawn here (forces "inconclusive")
    unit: str = ""  # what n counts: "layers", "questions", "seeds", ...
    null: dict = field(default_factory=dict)  # quantile -> the statistic's value under its null (bars)

    @property
    def interval(self) -> list[float]:
        return [self.low, self.high]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap(groups: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], float],
              level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Stratified bootstrap: resample the rows of each group (e.g. a seed's tuples or
    evaluation samples) independently, recompute ``statistic`` on the list of groups."""
    rng = _rng(seed)
    groups = [np.asarray(g) for g in groups]
    value = float(statistic(groups))
    reps = np.empty(n_boot)
    for b in range(n_boot):
        reps[b] = statistic([g[rng.integers(0, len(g), len(g))] for g in groups])
    lo, hi = np.nanpercentile(reps, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(value, float(lo), float(hi), level, n=int(sum(len(g) for g in groups)))


def mean_ci(x: np.ndarray, level: float = 0.95, seed: int = 0, n_boot: int = N_BOOT) -> Estimate:
    """Bootstrap interval of a mean."""
    x = np.asarray(x, dtype=float)
    rng = _rng(seed)
    idx = rng.integers(0, len(x), (n_boot, len(x)))
    reps = x[idx].mean(1)
    lo, hi = np.percentile(reps, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(float(x.mean()), float(lo), float(hi), level, n=len(x))


def by_position(changes: dict, seed: int = 0, digits: int = 4) -> tuple[dict, dict, dict]:
    """{name: [positions, questions]} paired changes -> ({name: [mean per position]}, lows,
    highs): each position's mean with its bootstrap interval over questions (a figure's bars)."""
    mean, low, high = {}, {}, {}
    for name, d in changes.items():
        es = [mean_ci(d[p], seed=seed) for p in range(d.shape[0])]
        mean[name], low[name], high[name] = ([round(getattr(e, a), digits) for e in es]
                                             for a in ("value", "low", "high"))
    return mean, low, high


def summary(x: np.ndarray, seed: int = 0, digits: int = 2) -> dict:
    """{"value", "interval"} of ``x``'s mean with its bootstrap interval, rounded (a record's
    descriptive statistic beside its verdict)."""
    e = mean_ci(x, seed=seed)
    return {"value": round(e.value, digits), "interval": [round(e.low, digits), round(e.high, digits)]}


def paired_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of b − a over paired items with a bootstrap interval (e.g. masked − original
    correctness, in accuracy points when a, b are 0/100)."""
    return mean_ci(np.asarray(b, float) - np.asarray(a, float), level, seed)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact McNemar p-value for paired binary outcomes (two-sided binomial on the
    discordant pairs)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    if n01 + n10 == 0:
        return 1.0
    return float(sps.binomtest(n01, n01 + n10, 0.5).pvalue)


def pearson_test(x: np.ndarray, y: np.ndarray, n_perm: int = 5000, n_boot: int = N_BOOT,
                 level: float = 0.95, seed: int = 0) -> Estimate:
    """Pearson ρ with a two-sided permutation p-value and a bootstrap interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = _rng(seed)
    r = _pearson(x, y)
    perm = np.array([_pearson(x, rng.permutation(y)) for _ in range(n_perm)])
    p = (1 + np.sum(np.abs(perm) >= abs(r) - 1e-12)) / (n_perm + 1)
    idx = rng.integers(0, len(x), (n_boot, len(x)))
    reps = np.array([_pearson(x[i], y[i]) for i in idx])
    lo, hi = np.nanpercentile(reps, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(float(r), float(lo), float(hi), level, p_value=float(p), n=len(x))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / den) if den > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return _pearson(sps.rankdata(x), sps.rankdata(y))


def t_interval(x: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean of a few independent replicates (seeds) with a Student-t interval."""
    x = np.asarray(x, dtype=float)
    m, n = float(x.mean()), len(x)
    if n < 2:
        return Estimate(m, float("nan"), float("nan"), level, n=n)
    hw = float(sps.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return Estimate(m, m - hw, m + hw, level, n=n)


def cluster_bootstrap(n_clusters: int, statistic: Callable[[np.ndarray], float], level: float = 0.95,
                      n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Bootstrap over clusters (e.g. the layers of a model's heads): ``statistic(idx)`` of
    cluster indices drawn with replacement; the estimate is ``statistic(arange(n))``."""
    rng = _rng(seed)
    value = float(statistic(np.arange(n_clusters)))
    reps = np.array([statistic(rng.integers(0, n_clusters, n_clusters)) for _ in range(n_boot)], dtype=float)
    lo, hi = np.nanpercentile(reps, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(value, float(lo), float(hi), level, n=n_clusters)


def _tango_z(b: int, c: int, n: int, d: float) -> float:
    """Tango's score statistic for H0: p(0,1) − p(1,0) = d (b pairs 1→0, c pairs 0→1)."""
    bb = (b + c) + d * (c - b - 2 * n)
    x = (bb + np.sqrt(max(bb * bb + 8 * n * b * d * (1 - d), 0.0))) / (4 * n)  # constrained MLE of p(1,0)
    var = n * (2 * x + d - d * d)
    if var <= 0:
        return 0.0 if c - b - n * d == 0 else np.sign(c - b - n * d) * np.inf
    return (c - b - n * d) / np.sqrt(var)


def _solve(f, lo: float, hi: float, it: int = 80) -> float:
    """Root of a decreasing f on [lo, hi] by bisection."""
    for _ in range(it):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def paired_proportion_difference(base: np.ndarray, new: np.ndarray, level: float = 0.95) -> Estimate:
    """Change in the share correct, new − base, of paired 0/1 outcomes [clusters, per cluster]
    (questions × gold positions): Tango's (1998) score interval for paired proportions,
    with the critical value widened by the design effect of the clustering (the
    cluster-robust variance of the discordant differences over the pairwise one; at least 1).
    Never collapses to a point: with no discordant pair at n pairs it is about ±z²/(n + z²)."""
    base, new = np.asarray(base, float), np.asarray(new, float)
    if base.ndim == 1:
        base, new = base[:, None], new[:, None]
    d = new - base  # [clusters, m]
    n = d.size
    b, c = int((d < 0).sum()), int((d > 0).sum())
    est = (c - b) / n
    deff = 1.0
    if b + c and d.shape[1] > 1:
        pair_var = ((d - est) ** 2).sum()
        cluster_var = ((d.sum(1) - d.shape[1] * est) ** 2).sum()
        deff = max(1.0, float(cluster_var / pair_var)) if pair_var > 0 else 1.0
    z = sps.norm.ppf(0.5 + level / 2) * np.sqrt(deff)
    lo = _solve(lambda x: _tango_z(b, c, n, x) - z, -1 + 1e-12, est) if est > -1 else -1.0
    hi = _solve(lambda x: _tango_z(b, c, n, x) + z, est, 1 - 1e-12) if est < 1 else 1.0
    out = Estimate(est, float(lo), float(hi), level, n=d.shape[0], unit="questions")
    out.extra = {"discordant_pairs": b + c, "worse": b, "better": c, "pairs": n, "design_effect": deff}
    return out


def spearman_null_quantiles(ranks: np.ndarray, quantiles=(0.95, 0.99), n_perm: int = 20000,
                            seed: int = 0) -> dict[float, float]:
    """Quantiles of Spearman(ranks, curve) when the curve has no order over ``ranks`` (its
    values permuted at random: what an untrained model's iid rows give)."""
    return dict(_null(tuple(np.asarray(ranks).tolist()), tuple(quantiles), n_perm, seed))


@functools.lru_cache(maxsize=32)
def _null(ranks: tuple, quantiles: tuple, n_perm: int, seed: int) -> tuple:
    rng = _rng(seed)
    r = sps.rankdata(ranks)
    v = np.arange(len(ranks), dtype=float)
    reps = np.array([_pearson(r, sps.rankdata(rng.permutation(v))) for _ in range(n_perm)])
    return tuple((q, float(np.quantile(reps, q))) for q in quantiles)
