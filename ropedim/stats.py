"""Statistics behind every verdict: bootstrap intervals, paired tests, permutation tests.

All functions are seeded and return plain floats; intervals are percentile bootstrap
intervals at ``level`` (0.95 unless said). An equivalence criterion ("within tolerance")
is judged on the same 95% interval: it must lie inside the tolerance band (conservative
against the two one-sided tests at 5%, which need only the 90% interval).
"""

from __future__ import annotations

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
    n: int | None = None  # sample size behind it
    extra: dict = field(default_factory=dict)  # numbers the report shows beside it
    precondition: str | None = None  # why no verdict can be drawn here (forces "inconclusive")

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
