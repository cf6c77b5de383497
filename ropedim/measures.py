"""Named measures: from experiment data to one statistic with its interval.

The claims table names a measure and its parameters; a claim test looks it up here, so
the test, the report and the library's control tests compute the same thing. Every
measure returns ``(Estimate, figure_data)``: plain lists that cross pytest-xdist and
from which the controller draws the claim's figure.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import stats
from .toy import ToyRun, magnitude

MEASURES: dict[str, Callable] = {}


def measure(fn: Callable) -> Callable:
    MEASURES[fn.__name__] = fn
    return fn


def _count(dim: int, fraction: float) -> int:
    """Dims in a fraction of a head, rounded to whole rotary pairs (16 of 128 = 1/8)."""
    return max(2, 2 * round(dim * fraction / 2))


def _toy_curves(runs: list[ToyRun]) -> dict:
    mag = np.stack([magnitude(r).numpy() for r in runs]).mean(0)  # [2, d]
    first = np.stack([r.loss_first.mean(-1).numpy() for r in runs]).mean(0)
    last = np.stack([r.loss_last.mean(-1).numpy() for r in runs]).mean(0)
    return {"setup": "rope" if runs[0].rope else "norope", "q": mag[0].tolist(), "k": mag[1].tolist(),
            "removed": list(runs[0].removed), "loss_first": first.tolist(), "loss_last": last.tolist(),
            "seeds": [r.seed for r in runs]}


@measure
def toy_weight_ratio(runs: list[ToyRun], fraction: float, seed: int = 0, **_):
    """C4a: log of mean |q|,|k| over the last ``fraction`` of dims (θ order) over the
    first; bootstrap over tuples, stratified by training seed, averaged over seeds."""
    c = _count(runs[0].q.shape[1], fraction)
    groups = []
    for r in runs:
        both = np.concatenate([r.q.abs().numpy(), r.k.abs().numpy()], axis=1)  # [n, 2d]
        d = r.q.shape[1]
        first = np.r_[0:c, d:d + c]
        last = np.r_[d - c:d, 2 * d - c:2 * d]
        groups.append(np.stack([both[:, first].mean(1), both[:, last].mean(1)], axis=1))  # [n, 2]

    def stat(gs):
        return float(np.mean([np.log(g[:, 1].mean() / g[:, 0].mean()) for g in gs]))

    est = stats.bootstrap(groups, stat, seed=seed)
    m = np.stack([magnitude(r).numpy().mean(0) for r in runs]).mean(0)
    est.extra = {"dims_per_end": c, "spearman_rank_vs_magnitude": stats.spearman(np.arange(len(m)), m),
                 "per_seed": [stat([g]) for g in groups]}
    return est, _toy_curves(runs)


def _removal(runs: list[ToyRun], a: tuple[str, int], b: tuple[str, int], seed: int):
    """Per-sample loss(b) − loss(a), bootstrapped over evaluation samples per seed."""
    groups = [(r.loss_removed(*b) - r.loss_removed(*a)).numpy() for r in runs]
    est = stats.bootstrap(groups, lambda gs: float(np.mean([g.mean() for g in gs])), seed=seed)
    est.extra = {"per_seed": [float(g.mean()) for g in groups]}
    return est


@measure
def toy_removal_delta(runs: list[ToyRun], which: str, fraction: float, seed: int = 0, **_):
    """C4b: loss increase (nats) when the first/last ``fraction`` of dims is removed."""
    k = _count(runs[0].q.shape[1], fraction)
    est = _removal(runs, ("first", 0), (which, k), seed)
    est.extra["dims_removed"] = k
    return est, _toy_curves(runs)


@measure
def toy_removal_asymmetry(runs: list[ToyRun], fraction: float, seed: int = 0, **_):
    """C4b: loss with the last ``fraction`` removed minus loss with the first removed."""
    k = _count(runs[0].q.shape[1], fraction)
    est = _removal(runs, ("first", k), ("last", k), seed)
    est.extra["dims_removed"] = k
    return est, _toy_curves(runs)


# --- §5, W_q row norms (C5a) ----------------------------------------------------

def _wq(loaded, scaled: bool):
    from .weights import wq_norms
    w = wq_norms(loaded.model, loaded.anatomy)
    paper = w.scaled_paper if scaled else w.paper  # [L, H, Dh]
    rho = (w.scaled_spearman if scaled else w.spearman).flatten().numpy()
    figure = {"model": loaded.name, "scaled": scaled,
              "curve": paper.mean(dim=(0, 1)).tolist(),
              "heatmap": np.round(paper.flatten(0, 1).numpy(), 4).tolist(),  # [L·H, Dh]
              "n_heads": loaded.anatomy.n_heads}
    return rho[~np.isnan(rho)], figure


@measure
def wq_trend(loaded, scaled: bool, seed: int = 0, **_):
    """C5a: mean over heads of Spearman(θ rank, W_q row L1); bootstrap over heads."""
    rho, figure = _wq(loaded, scaled)
    est = stats.mean_ci(rho, seed=seed)
    est.extra = {"heads": len(rho), "share_positive": float((rho > 0).mean())}
    return est, figure


@measure
def wq_trend_share(loaded, scaled: bool, seed: int = 0, **_):
    """C5a: share of heads whose Spearman(θ rank, W_q row L1) is positive."""
    rho, figure = _wq(loaded, scaled)
    est = stats.mean_ci((rho > 0).astype(float), seed=seed)
    est.extra = {"heads": len(rho), "mean_spearman": float(rho.mean())}
    return est, figure
