"""Named measures: from experiment data to one statistic with its interval.

The claims table names a measure and its arguments; a claim test looks it up here, so the
test, the report and the library's control tests compute the same thing. A measure takes
the data of its subject (the toy's runs, a loaded model, or a QA run satisfying
``ropedim.qa.study.QARun``), keyword arguments from the table and the seed, and returns a
:class:`Measurement`: the estimate and the figure payload it declares. Arguments are
exact: a misspelt one raises (no ``**kwargs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import stats
from .figures import AccuracyByPosition, HeadProfile, Payload, Scatter, ToyCurves
from .qa.masks import LowUtility, QueryMask, RetrievalHeadDims
from .registry import Registry
from .retrieval import retrieval_heads
from .rope import dims_in_fraction, first_last_mask
from .toy import ToyRun, magnitude
from .weights import spearman_with_rank, to_paper_order, wq_norms, wq_row_l1

__all__ = ["Measurement", "Measure", "MEASURES", "NotApplicable"]


class NotApplicable(Exception):
    """The check does not apply to this subject (the test is skipped with the reason)."""


@dataclass
class Measurement:
    estimate: stats.Estimate
    figure: Payload | None = None
    mode_check: list = field(default_factory=list)  # ropedim.qa.mode_check.ModeAgreement rows


@dataclass(frozen=True)
class Measure:
    fn: Callable[..., Measurement]
    payload: type  # the figure payload it returns

    def __call__(self, data, **kwargs) -> Measurement:
        return self.fn(data, **kwargs)


MEASURES: Registry = Registry("measure")


def measure(payload: type):
    def register(fn):
        MEASURES.register(fn.__name__, Measure(fn, payload))
        return fn
    return register


# --- §4, the toy (C4a, C4b) -----------------------------------------------------

def _toy_curves(runs: list[ToyRun]) -> ToyCurves:
    mag = np.stack([magnitude(r).numpy() for r in runs]).mean(0)  # [2, d]
    first = np.stack([r.loss_first.mean(-1).numpy() for r in runs]).mean(0)
    last = np.stack([r.loss_last.mean(-1).numpy() for r in runs]).mean(0)
    return ToyCurves("rope" if runs[0].rope else "norope", mag[0].tolist(), mag[1].tolist(),
                     list(runs[0].removed), first.tolist(), last.tolist(), [r.seed for r in runs])


@measure(ToyCurves)
def toy_weight_ratio(runs: list[ToyRun], *, fraction: float, seed: int = 0):
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
    return Measurement(est, _toy_curves(runs))


def _removal(runs: list[ToyRun], a: tuple[str, int], b: tuple[str, int], seed: int):
    """Per-sample loss(b) − loss(a), bootstrapped over evaluation samples per seed."""
    groups = [(r.loss_removed(*b) - r.loss_removed(*a)).numpy() for r in runs]
    est = stats.bootstrap(groups, lambda gs: float(np.mean([g.mean() for g in gs])), seed=seed)
    est.extra = {"per_seed": [float(g.mean()) for g in groups], "dims_removed": b[1]}
    return Measurement(est, _toy_curves(runs))


@measure(ToyCurves)
def toy_removal_delta(runs: list[ToyRun], *, which: str, fraction: float, seed: int = 0):
    """C4b: loss increase (nats) when the first/last ``fraction`` of dims is removed."""
    return _removal(runs, ("first", 0), (which, dims_in_fraction(runs[0].q.shape[1], fraction)), seed)


@measure(ToyCurves)
def toy_removal_asymmetry(runs: list[ToyRun], *, fraction: float, seed: int = 0):
    """C4b: loss with the last ``fraction`` removed minus loss with the first removed."""
    k = dims_in_fraction(runs[0].q.shape[1], fraction)
    return _removal(runs, ("first", k), ("last", k), seed)


# --- per-head trends over θ rank: W_q row norms (C5a), utility (C5b) ----------------

def _theta_trend(values: torch.Tensor, rank: torch.Tensor, statistic: str, seed: int):
    """Per head Spearman(θ rank, values [L, H, Dh]); the mean over heads ("mean") or the
    share of heads with a positive trend ("share"), bootstrap over heads."""
    rho = spearman_with_rank(values, rank).flatten().numpy()
    rho = rho[~np.isnan(rho)]
    if statistic == "mean":
        est = stats.mean_ci(rho, seed=seed)
        est.extra = {"heads": len(rho), "share_positive": float((rho > 0).mean())}
    elif statistic == "share":
        est = stats.mean_ci((rho > 0).astype(float), seed=seed)
        est.extra = {"heads": len(rho), "mean_spearman": float(rho.mean())}
    else:
        raise ValueError(f"statistic must be 'mean' or 'share', got {statistic!r}")
    est.extra["heads_with_constant_values"] = int(values[..., 0].numel() - len(rho))
    return est


def _profile(values: torch.Tensor, loaded, source: str, task: str | None, digits: int) -> HeadProfile:
    paper = to_paper_order(values, loaded.anatomy.rank)  # [L, H, Dh]
    return HeadProfile(loaded.name, source, paper.mean(dim=(0, 1)).tolist(),
                       np.round(paper.flatten(0, 1).numpy(), digits).tolist(), loaded.anatomy.n_heads, task)


@measure(HeadProfile)
def wq_trend(loaded, *, scaled: bool, statistic: str, seed: int = 0):
    """C5a: Spearman(θ rank, W_q row L1) per head; mean over heads or share positive."""
    w = wq_norms(loaded.model, loaded.anatomy)
    if scaled and w.scaled_storage is None:
        raise NotApplicable(f"{loaded.name} has no q_norm before RoPE: the scaled check is the raw one")
    values = w.scaled_storage if scaled else w.storage
    return Measurement(_theta_trend(values, loaded.anatomy.rank, statistic, seed),
                       _profile(values, loaded, "wq_scaled" if scaled else "wq", None, 4))


@measure(HeadProfile)
def utility_trend(qa, *, statistic: str, seed: int = 0):
    """C5b: Spearman(θ rank, utility u) per head; mean over heads or share positive."""
    u = qa.head_scores().utility
    return Measurement(_theta_trend(u, qa.loaded.anatomy.rank, statistic, seed),
                       _profile(u, qa.loaded, "utility", qa.cfg.task, 3))


# --- §5.3 and Fig. 4: correlations over heads -------------------------------------

def _dims_mean(x: torch.Tensor, qa, which: str, fraction: float) -> np.ndarray:
    """Per head, the mean of x [L, H, Dh] over the first/last ``fraction`` of dims -> [L·H]."""
    a = qa.loaded.anatomy
    k = dims_in_fraction(a.head_dim, fraction)
    sel = torch.stack([first_last_mask(r, which, k) for r in a.rank]).float()  # [L, Dh]
    return ((x * sel[:, None]).sum(-1) / sel.sum(-1)[:, None]).flatten().numpy()


def _corr(x, y, seed, labels, qa, which):
    ok = ~(np.isnan(x) | np.isnan(y))
    est = stats.pearson_test(x[ok], y[ok], seed=seed)
    a = qa.loaded.anatomy
    layers = np.repeat(np.arange(a.n_layers), a.n_heads)
    fig = Scatter(qa.loaded.name, qa.cfg.task, which, np.round(x, 4).tolist(), np.round(y, 4).tolist(),
                  layers.tolist(), labels)
    return est, fig


@measure(Scatter)
def retrieval_utility_corr(qa, *, which: str, fraction: float, retrieval_threshold: float, seed: int = 0):
    """C5d: Pearson ρ over heads between the retrieval score and the mean utility of the
    first/last dims; permutation p-value, bootstrap interval."""
    scores = qa.head_scores()
    x = scores.retrieval.flatten().numpy()
    y = _dims_mean(scores.utility, qa, which, fraction)
    est, fig = _corr(x, y, seed, ["retrieval score", f"mean utility, {which} dims"], qa, which)
    est.extra = {"p_permutation": est.p_value, "heads": int(len(x)),
                 "retrieval_heads": len(retrieval_heads(scores.retrieval, retrieval_threshold))}
    return Measurement(est, fig)


@measure(Scatter)
def wq_utility_corr(qa, *, which: str, fraction: float, seed: int = 0):
    """Fig. 4: Pearson ρ over heads between the W_q row L1 norm and the utility of the
    first/last dims."""
    x = _dims_mean(wq_row_l1(qa.loaded.model), qa, which, fraction)
    y = _dims_mean(qa.head_scores().utility, qa, which, fraction)
    est, fig = _corr(x, y, seed, [f"W_q row L1, {which} dims", f"mean utility, {which} dims"], qa, which)
    est.extra = {"p_permutation": est.p_value, "heads": int(len(x))}
    return Measurement(est, fig)


# --- §5.2 Table 1 and §5.4 Table 2: masked accuracy --------------------------------

def _accuracy(qa, correct) -> AccuracyByPosition:
    return AccuracyByPosition(qa.loaded.name, qa.cfg.task, [p + 1 for p in qa.cfg.positions],
                              {v: (100 * c.mean(1)).tolist() for v, c in correct.items()},
                              int(correct["none"].shape[1]), qa.cfg.mode)


def _precondition(qa, correct, mask: QueryMask, min_accuracy: float) -> str | None:
    base = 100 * correct["none"].mean()
    if base < min_accuracy:
        return (f"original accuracy {base:.1f}% is below the floor of {min_accuracy:g}%: "
                f"the model is too weak on this task to decide")
    if isinstance(mask, RetrievalHeadDims) and not mask.heads(qa.head_scores()):
        return f"no head has a retrieval score above {mask.retrieval_threshold:g}: nothing to mask"
    return None


def _extra_masked(qa, mask: QueryMask) -> dict:
    scores = qa.head_scores()
    if isinstance(mask, RetrievalHeadDims):
        return {"retrieval_heads": len(mask.heads(scores))}
    if isinstance(mask, LowUtility):
        return {"share_of_dims_masked": mask.share_masked(scores)}
    return {}


@measure(AccuracyByPosition)
def masked_accuracy_delta(qa, *, mask: QueryMask, min_accuracy: float, seed: int = 0):
    """C5c/C5e/C5f: masked − original accuracy in points, averaged over gold positions;
    paired bootstrap over questions, McNemar on all (question, position) pairs."""
    correct = qa.correctness()
    base, masked = correct["none"], correct[mask.name]  # [positions, questions]
    est = stats.paired_difference(100 * base.mean(0), 100 * masked.mean(0), seed=seed)
    est.p_value = stats.mcnemar(base.flatten(), masked.flatten())
    est.extra = {"accuracy_original": (100 * base.mean(1)).tolist(),
                 "accuracy_masked": (100 * masked.mean(1)).tolist(), "mcnemar_p": est.p_value,
                 **_extra_masked(qa, mask)}
    est.precondition = _precondition(qa, correct, mask, min_accuracy)
    return Measurement(est, _accuracy(qa, correct), qa.mode_check())


@measure(AccuracyByPosition)
def masked_position_gap(qa, *, mask: QueryMask, min_accuracy: float, seed: int = 0):
    """C5f: (masked − original) at the last gold position minus at the first; paired
    bootstrap over questions."""
    correct = qa.correctness()
    d = 100 * (correct[mask.name].astype(float) - correct["none"])  # [positions, questions]
    est = stats.mean_ci(d[-1] - d[0], seed=seed)
    est.extra = {"delta_by_position": d.mean(1).tolist()}
    est.precondition = _precondition(qa, correct, mask, min_accuracy)
    return Measurement(est, _accuracy(qa, correct), qa.mode_check())
