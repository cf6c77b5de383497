"""Named measures: from experiment data to one statistic with its interval.

The claims table names a measure and its parameters; a claim test looks it up here, so
the test, the report and the library's control tests compute the same thing. Every
measure returns ``(Estimate, figure_data)``: plain lists that cross pytest-xdist and
from which the controller draws the claim's figure.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from . import stats
from .rope import dims_in_fraction
from .toy import ToyRun, magnitude

MEASURES: dict[str, Callable] = {}


def measure(fn: Callable) -> Callable:
    MEASURES[fn.__name__] = fn
    return fn


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
    c = dims_in_fraction(runs[0].q.shape[1], fraction)
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
    k = dims_in_fraction(runs[0].q.shape[1], fraction)
    est = _removal(runs, ("first", 0), (which, k), seed)
    est.extra["dims_removed"] = k
    return est, _toy_curves(runs)


@measure
def toy_removal_asymmetry(runs: list[ToyRun], fraction: float, seed: int = 0, **_):
    """C4b: loss with the last ``fraction`` removed minus loss with the first removed."""
    k = dims_in_fraction(runs[0].q.shape[1], fraction)
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


# --- §5.2-5.4: utility, retrieval heads, masked accuracy --------------------------

def _trend(study, seed):
    from .weights import spearman_with_rank, to_paper_order
    u, rank = study.scores["utility"], study.loaded.anatomy.rank
    rho = spearman_with_rank(u, rank).flatten().numpy()
    paper = to_paper_order(u, rank)
    figure = {"model": study.loaded.name, "task": study.cfg.task, "curve": paper.mean(dim=(0, 1)).tolist(),
              "heatmap": np.round(paper.flatten(0, 1).numpy(), 3).tolist(),
              "n_heads": study.loaded.anatomy.n_heads}
    return rho[~np.isnan(rho)], figure


@measure
def utility_trend(study, seed: int = 0, **_):
    """C5b: mean over heads of Spearman(θ rank, u); bootstrap over heads."""
    rho, figure = _trend(study, seed)
    est = stats.mean_ci(rho, seed=seed)
    est.extra = {"heads": len(rho), "share_positive": float((rho > 0).mean()),
                 "heads_with_constant_u": int(study.scores["utility"].numel() // study.loaded.anatomy.head_dim - len(rho))}
    return est, figure


@measure
def utility_trend_share(study, seed: int = 0, **_):
    """C5b: share of heads whose Spearman(θ rank, u) is positive."""
    rho, figure = _trend(study, seed)
    est = stats.mean_ci((rho > 0).astype(float), seed=seed)
    est.extra = {"heads": len(rho), "mean_spearman": float(rho.mean())}
    return est, figure


def _dims_mean(x, study, which, fraction):
    """Per head, the mean of x [L, H, Dh] over the first/last ``fraction`` of dims -> [L·H]."""
    from .rope import first_last_mask
    a = study.loaded.anatomy
    k = dims_in_fraction(a.head_dim, fraction)
    sel = torch.stack([first_last_mask(r, which, k) for r in a.rank]).float()  # [L, Dh]
    return ((x * sel[:, None]).sum(-1) / sel.sum(-1)[:, None]).flatten().numpy()


def _corr(x, y, seed, labels, study, which):
    ok = ~(np.isnan(x) | np.isnan(y))
    est = stats.pearson_test(x[ok], y[ok], seed=seed)
    layers = np.repeat(np.arange(study.loaded.anatomy.n_layers), study.loaded.anatomy.n_heads)
    figure = {"model": study.loaded.name, "task": study.cfg.task, "which": which, "x": np.round(x, 4).tolist(),
              "y": np.round(y, 4).tolist(), "layer": layers.tolist(), "labels": labels}
    return est, figure


@measure
def retrieval_utility_corr(study, which: str, fraction: float, seed: int = 0, **_):
    """C5d: Pearson ρ over heads between the retrieval score and the mean utility of the
    first/last dims; permutation p-value, bootstrap interval."""
    x = study.scores["retrieval"].flatten().numpy()
    y = _dims_mean(study.scores["utility"], study, which, fraction)
    est, fig = _corr(x, y, seed, ["retrieval score", f"mean utility, {which} dims"], study, which)
    est.extra = {"p_permutation": est.p_value, "heads": int(len(x)),
                 "retrieval_heads": len(study.retrieval_heads)}
    return est, fig


@measure
def wq_utility_corr(study, which: str, fraction: float, seed: int = 0, **_):
    """Fig. 4: Pearson ρ over heads between the W_q row L1 norm and the utility of the
    first/last dims."""
    from .weights import wq_row_l1
    x = _dims_mean(wq_row_l1(study.model), study, which, fraction)
    y = _dims_mean(study.scores["utility"], study, which, fraction)
    est, fig = _corr(x, y, seed, [f"W_q row L1, {which} dims", f"mean utility, {which} dims"], study, which)
    est.extra = {"p_permutation": est.p_value, "heads": int(len(x))}
    return est, fig


def _accuracy_table(study, correct):
    return {"model": study.loaded.name, "task": study.cfg.task,
            "positions": [p + 1 for p in study.cfg.positions],
            "accuracy": {v: (100 * c.mean(1)).tolist() for v, c in correct.items()},
            "n": int(correct["none"].shape[1]), "mode": getattr(study.cfg, "mode", None),
            "fast_vs_faithful": study.mode_check() if hasattr(study, "mode_check") else {}}


def _precondition(study, correct, variant, min_accuracy):
    base = 100 * correct["none"].mean()
    if base < min_accuracy:
        return (f"original accuracy {base:.1f}% is below the floor of {min_accuracy:g}%: "
                f"the model is too weak on this task to decide")
    if variant in ("first16", "first32", "last16", "last32") and not study.retrieval_heads:
        return f"no head has a retrieval score above {study.retrieval_threshold:g}: nothing to mask"
    return None


@measure
def masked_accuracy_delta(study, variant: str, min_accuracy: float, seed: int = 0, **_):
    """C5c/C5e/C5f: masked − original accuracy in points, averaged over gold positions;
    paired bootstrap over questions, McNemar on all (question, position) pairs."""
    correct = study.correct_all()
    base, masked = correct["none"], correct[variant]  # [positions, questions]
    est = stats.paired_difference(100 * base.mean(0), 100 * masked.mean(0), seed=seed)
    est.p_value = stats.mcnemar(base.flatten(), masked.flatten())
    est.extra = {"accuracy_original": (100 * base.mean(1)).tolist(),
                 "accuracy_masked": (100 * masked.mean(1)).tolist(),
                 "mcnemar_p": est.p_value, "retrieval_heads": len(study.retrieval_heads),
                 "precondition": _precondition(study, correct, variant, min_accuracy)}
    if variant == "utility":
        est.extra["share_of_dims_masked"] = float((study.scores["utility"] < study.utility_threshold).float().mean())
    return est, _accuracy_table(study, correct)


@measure
def masked_position_gap(study, variant: str, min_accuracy: float, seed: int = 0, **_):
    """C5f: (masked − original) at the last gold position minus at the first; paired
    bootstrap over questions."""
    correct = study.correct_all()
    d = 100 * (correct[variant].astype(float) - correct["none"])  # [positions, questions]
    est = stats.mean_ci(d[-1] - d[0], seed=seed)
    est.extra = {"delta_by_position": d.mean(1).tolist(),
                 "precondition": _precondition(study, correct, variant, min_accuracy)}
    return est, _accuracy_table(study, correct)
