"""Named measures: from experiment data to one statistic with its interval.

The claims table names a measure and its arguments; a claim test looks it up here, so the
test, the report and the library's control tests compute the same thing. A measure takes
the data of its subject (the toy's runs, a loaded model, a QA run satisfying
``ropedim.qa.study.QARun``, or nothing for the RoPE identity), keyword arguments from the
table and the seed, and returns a :class:`Measurement`: the estimate and the figure
payload it declares. Arguments are exact: a misspelt one raises (no ``**kwargs``).

Units (``ropedim.stats``): trained toys replicate over seeds; head-level statistics
resample layers (heads of a layer are not independent), and examples too where the
scores are per-example averages; accuracy changes are paired per question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import rope as R
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
    mode: str | None = None  # masked accuracy: the masking mode the verdict rests on
    mode_check: list = field(default_factory=list)  # ropedim.qa.mode_check.ModeAgreement rows of this run


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


# --- §2, Eq. 2: the score depends on positions only through n − m -----------------

@measure(Payload)
def rope_relative_position(_, *, cases: int, dims: tuple[int, ...], seed: int = 0):
    """C2: the largest |RoPE(q_m)·RoPE(k_n) − RoPE(q_{m+s})·RoPE(k_{n+s})|, relative to
    |q||k|, over seeded random cases (vectors, positions, shifts, head sizes, bases, both
    storage layouts), in float32 as the models compute it."""
    g = torch.Generator().manual_seed(seed)
    worst, rows = 0.0, []
    for d in dims:
        for base in (1e4, 1e6):
            theta = R.inv_freq(d, base)
            q, k = torch.randn(cases, d, generator=g), torch.randn(cases, d, generator=g)
            m, n, s = (torch.randint(0, 4096, (cases,), generator=g) for _ in range(3))
            for layout, rot in (("paper", R.rotate), ("half", R.apply_half_split)):
                a = (rot(q, m, theta) * rot(k, n, theta)).sum(-1)
                b = (rot(q, m + s, theta) * rot(k, n + s, theta)).sum(-1)
                err = float(((a - b).abs() / (q.norm(dim=-1) * k.norm(dim=-1))).max())
                rows.append({"dims": d, "base": base, "layout": layout, "cases": cases, "max_rel_error": err})
                worst = max(worst, err)
    est = stats.Estimate(worst, worst, worst, n=len(rows) * cases, unit="cases")
    est.extra = {"cases": rows}
    return Measurement(est)


# --- §4, the toy (C4a, C4b); replicates are seeds ----------------------------------

def _toy_curves(runs: list[ToyRun]) -> ToyCurves:
    mag = np.stack([magnitude(r).numpy() for r in runs]).mean(0)  # [2, d]
    first = np.stack([r.loss_first.mean(-1).numpy() for r in runs]).mean(0)
    last = np.stack([r.loss_last.mean(-1).numpy() for r in runs]).mean(0)
    return ToyCurves("rope" if runs[0].rope else "norope", mag[0].tolist(), mag[1].tolist(),
                     list(runs[0].removed), first.tolist(), last.tolist(), [r.seed for r in runs],
                     runs[0].init_std)


def _ends(d: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    c = dims_in_fraction(d, fraction)
    return np.arange(c), np.arange(d - c, d)


def _runs(runs: dict, init: str) -> dict[str, list[ToyRun]]:
    """The setups trained with initialisation ``init`` ("1": N(0, 1); "1/d": N(0, 1/d))."""
    if init not in runs:
        raise NotApplicable(f"this profile trains the toy with initialisation {', '.join(runs)} only, not {init}")
    return runs[init]


def _per_seed(runs, stat) -> stats.Estimate:
    est = stats.t_interval(np.array([stat(r) for r in runs]))
    est.unit, est.extra = "seeds", {"per_seed": [float(stat(r)) for r in runs], "seeds": [r.seed for r in runs]}
    return est


@measure(ToyCurves)
def toy_weight_ratio(runs: dict, *, setup: str, fraction: float, relative: bool, init: str, seed: int = 0):
    """C4a: log(mean magnitude of the last ``fraction`` of dims / of the first), dims in θ
    order, magnitude = mean |q|, |k| per dim. ``relative``: each dim's magnitude divided by
    its no-RoPE twin's (same seed, initialisation and data), which cancels the init scale.
    ``runs``: {init: {setup: [ToyRun per seed]}}; replicates: seeds (t interval)."""
    runs = _runs(runs, init)
    first, last = _ends(runs[setup][0].q.shape[1], fraction)
    twin = {r.seed: r for r in runs["norope"]}

    def stat(r):
        m = magnitude(r).numpy().mean(0)  # [d]
        if relative:
            m = m / magnitude(twin[r.seed]).numpy().mean(0)
        return float(np.log(m[last].mean() / m[first].mean()))

    est = _per_seed(runs[setup], stat)
    m = np.stack([magnitude(r).numpy().mean(0) for r in runs[setup]]).mean(0)
    est.extra.update(dims_per_end=len(first), spearman_rank_vs_magnitude=stats.spearman(np.arange(len(m)), m))
    return Measurement(est, _toy_curves(runs[setup]))


@measure(ToyCurves)
def toy_removal_delta(runs: dict, *, setup: str, which: str, fraction: float, init: str, seed: int = 0):
    """C4b: loss increase (nats) when the first/last ``fraction`` of dims is removed; the
    mean over evaluation samples per seed, replicates: seeds."""
    runs = _runs(runs, init)
    k = dims_in_fraction(runs[setup][0].q.shape[1], fraction)
    est = _per_seed(runs[setup], lambda r: float((r.loss_removed(which, k) - r.loss_removed("first", 0)).mean()))
    est.extra["dims_removed"] = k
    return Measurement(est, _toy_curves(runs[setup]))


@measure(ToyCurves)
def toy_removal_asymmetry(runs: dict, *, setup: str, fraction: float, init: str, seed: int = 0):
    """C4b: loss with the last ``fraction`` removed minus loss with the first removed."""
    runs = _runs(runs, init)
    k = dims_in_fraction(runs[setup][0].q.shape[1], fraction)
    est = _per_seed(runs[setup], lambda r: float((r.loss_removed("last", k) - r.loss_removed("first", k)).mean()))
    est.extra["dims_removed"] = k
    return Measurement(est, _toy_curves(runs[setup]))


# --- per-head values over θ rank: W_q row norms (C5a), utility (C5b) ---------------------

def _theta_trend(values: torch.Tensor, rank: torch.Tensor, seed: int) -> stats.Estimate:
    """The paper's statistic: the curve averaged over layers and heads in θ order (Fig. 2)
    and its Spearman correlation with θ rank; interval from a bootstrap over layers
    (resample layers, rebuild the curve); the bar's null: the same statistic on a curve
    whose dims have no θ order. The per-head trend (Spearman per head; its mean and the
    share of heads with a positive one) is descriptive."""
    paper = to_paper_order(values, rank).double().numpy()  # [L, H, Dh]
    x = np.sort(rank[0].numpy())  # θ rank at each position of the paper order (pairs tie)
    curve_rho = lambda idx: stats.spearman(x, paper[idx].mean((0, 1)))
    est = stats.cluster_bootstrap(paper.shape[0], curve_rho, seed=seed)
    est.unit, est.null = "layers", stats.spearman_null_quantiles(x, seed=seed)
    rho = spearman_with_rank(values, rank).numpy()  # [L, H]
    ok = ~np.isnan(rho)
    mean = stats.cluster_bootstrap(rho.shape[0], lambda i: np.nanmean(rho[i]), seed=seed)
    share = stats.cluster_bootstrap(rho.shape[0], lambda i: np.mean(rho[i][ok[i]] > 0), seed=seed)
    est.extra = {"per_head_mean_spearman": [mean.value, mean.low, mean.high],
                 "share_of_heads_increasing": [share.value, share.low, share.high],
                 "heads": int(ok.sum()), "heads_with_constant_values": int((~ok).sum())}
    return est


def _profile(values: torch.Tensor, loaded, source: str, task: str | None, digits: int) -> HeadProfile:
    paper = to_paper_order(values, loaded.anatomy.rank)  # [L, H, Dh]
    return HeadProfile(loaded.name, source, paper.mean(dim=(0, 1)).tolist(),
                       np.round(paper.flatten(0, 1).numpy(), digits).tolist(), loaded.anatomy.n_heads, task)


@measure(HeadProfile)
def wq_trend(loaded, *, scaled: bool, seed: int = 0):
    """C5a: the trend over θ rank of the W_q row L1 norm averaged over layers and heads."""
    w = wq_norms(loaded.model, loaded.anatomy)
    if scaled and w.scaled_storage is None:
        raise NotApplicable(f"{loaded.name} has no q_norm before RoPE: the scaled check is the raw one")
    values = w.scaled_storage if scaled else w.storage
    return Measurement(_theta_trend(values, loaded.anatomy.rank, seed),
                       _profile(values, loaded, "wq_scaled" if scaled else "wq", None, 4))


@measure(HeadProfile)
def utility_trend(qa, *, reading: str, seed: int = 0):
    """C5b: the trend over θ rank of the utility u averaged over layers and heads."""
    u = qa.head_scores(reading).utility
    est = _theta_trend(u, qa.loaded.anatomy.rank, seed)
    est.extra["examples"] = qa.head_scores(reading).n_examples
    return Measurement(est, _profile(u, qa.loaded, "utility", qa.cfg.task, 3))


# --- §5.3 and Fig. 4: correlations over heads -------------------------------------

def _dims_mean(x: torch.Tensor, anatomy, which: str, fraction: float) -> np.ndarray:
    """Per head, the mean of x [L, H, Dh] over the first/last ``fraction`` of dims -> [L, H]."""
    k = dims_in_fraction(anatomy.head_dim, fraction)
    sel = torch.stack([first_last_mask(r, which, k) for r in anatomy.rank]).float()  # [L, Dh]
    return ((x * sel[:, None]).sum(-1) / sel.sum(-1)[:, None]).double().numpy()


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = ~(np.isnan(x) | np.isnan(y))
    return stats._pearson(x[ok], y[ok])


def _layer_centred(x: np.ndarray) -> np.ndarray:
    return x - np.nanmean(x, axis=1, keepdims=True)


def _head_corr(x_of, y: np.ndarray, n_examples: int | None, seed: int, form: str) -> stats.Estimate:
    """Pearson ρ over heads [L, H] with an interval from a bootstrap over layers and, where
    ``x_of(examples)`` averages per-example scores, over examples too (two levels).
    ``form``: "pooled" (the paper's: all heads together) or "within-layer" (each layer's
    mean removed first, so which layers retrieve does not drive it)."""
    f = (lambda a: a) if form == "pooled" else _layer_centred
    rng = np.random.default_rng(seed + 1)
    all_ex = None if n_examples is None else np.arange(n_examples)

    def stat(idx, ex=all_ex):
        return _pearson(f(x_of(ex)[idx]).ravel(), f(y[idx]).ravel())

    if n_examples is None:
        est = stats.cluster_bootstrap(y.shape[0], stat, seed=seed)
    else:  # layers and examples resampled together
        est = stats.cluster_bootstrap(y.shape[0], lambda idx: stat(idx, rng.integers(0, n_examples, n_examples)),
                                      seed=seed)
        est.value = stat(np.arange(y.shape[0]))
    est.unit = "layers"
    return est


def _scatter(qa, which, x, y, labels) -> Scatter:
    a = qa.loaded.anatomy
    layers = np.repeat(np.arange(a.n_layers), a.n_heads)
    return Scatter(qa.loaded.name, qa.cfg.task, which, np.round(x.ravel(), 4).tolist(), np.round(y.ravel(), 4).tolist(),
                   layers.tolist(), labels)


@measure(Scatter)
def retrieval_utility_corr(qa, *, which: str, fraction: float, retrieval_threshold: float, reading: str,
                           form: str = "pooled", seed: int = 0):
    """C5d: Pearson ρ over heads between the retrieval score and the mean utility of the
    first/last dims (``which``: "first", "last", or "contrast": the last minus the first);
    bootstrap over layers and analysis examples."""
    s, a = qa.head_scores(reading), qa.loaded.anatomy
    y = _u_of(s.utility, a, which, fraction)
    x_of = lambda ex: s.retrieval_examples[ex].mean(0).double().numpy()
    est = _head_corr(x_of, y, s.retrieval_examples.shape[0], seed, form)
    heads = retrieval_heads(s.retrieval, retrieval_threshold)
    est.extra = {"heads": int(y.size), "examples": s.n_examples, "form": form,
                 "retrieval_heads": len(heads),
                 "retrieval_heads_by_layer": np.bincount([l for l, _ in heads], minlength=a.n_layers).tolist(),
                 "gold_document_score_mean": float(s.gold.mean()),
                 "rho_gold_document_vs_retrieval": _pearson(s.gold.double().numpy().ravel(),
                                                            s.retrieval.double().numpy().ravel())}
    return Measurement(est, _scatter(qa, which, s.retrieval.numpy(), y, ["retrieval score", f"mean utility, {which} dims"]))


def _u_of(x: torch.Tensor, anatomy, which: str, fraction: float) -> np.ndarray:
    if which == "contrast":
        return _dims_mean(x, anatomy, "last", fraction) - _dims_mean(x, anatomy, "first", fraction)
    return _dims_mean(x, anatomy, which, fraction)


@measure(Scatter)
def wq_utility_corr(qa, *, which: str, fraction: float, reading: str, form: str = "pooled", seed: int = 0):
    """Fig. 4: Pearson ρ over heads between the W_q row L1 norm and the utility of the
    first/last dims ("contrast": last minus first of both); bootstrap over layers."""
    a = qa.loaded.anatomy
    x = _u_of(wq_row_l1(qa.loaded.model), a, which, fraction)
    y = _u_of(qa.head_scores(reading).utility, a, which, fraction)
    est = _head_corr(lambda ex: x, y, None, seed, form)
    est.extra = {"heads": int(y.size), "form": form}
    return Measurement(est, _scatter(qa, which, x, y, [f"W_q row L1, {which} dims", f"mean utility, {which} dims"]))


# --- §5.2 Table 1 and §5.4 Table 2: masked accuracy --------------------------------

def _in(qa, mode: str, mask: QueryMask) -> dict:
    c = qa.correctness(mode)
    return c if mask.name in c else qa.correctness(mode, [mask.name])


def _correct(qa, mask: QueryMask, mode: str, mode_tolerance: float):
    """(correctness {mask: [positions, questions]}, the mode of the verdict, its mode check,
    precondition). A fast-mode verdict stands only where faithful − fast lies within
    ±``mode_tolerance`` points; else it is computed in faithful mode (``fallback``) or is
    inconclusive."""
    mode = qa.mode_of(mode)
    agreement = {m.variant: m for m in qa.mode_check()}.get(mask.name)
    if mode == "faithful":
        return _in(qa, "faithful", mask), "faithful", agreement, None
    if agreement is not None and agreement.within(mode_tolerance):
        return _in(qa, "fast", mask), "fast", agreement, None
    if qa.cfg.fallback == "faithful":
        return _in(qa, "faithful", mask), "faithful (fast not verified)", agreement, None
    gap = ("no mode check" if agreement is None else
           f"faithful − fast = {agreement.difference:.3g} [{agreement.low:.3g}, {agreement.high:.3g}] points over "
           f"{agreement.questions} questions")
    return (_in(qa, "fast", mask), "fast", agreement,
            f"fast mode not verified: {gap}, not within ±{mode_tolerance:g}; the paper's faithful mode is needed")


def _accuracy(qa, correct, mode) -> AccuracyByPosition:
    return AccuracyByPosition(qa.loaded.name, qa.cfg.task, [p + 1 for p in qa.cfg.positions],
                              {v: (100 * c.mean(1)).tolist() for v, c in correct.items()},
                              int(correct["none"].shape[1]), mode)


def _guards(qa, correct, mask: QueryMask, min_accuracy: float, min_share_masked: float) -> str | None:
    """Preconditions of an accuracy claim: a model that answers (accuracy above the floor),
    a mask with something to mask."""
    base = 100 * correct["none"].mean()
    if base < min_accuracy:
        return (f"original accuracy {base:.1f}% is below the floor of {min_accuracy:g}%: "
                f"the model is too weak on this task to decide")
    share = _share_masked(qa, mask)
    if share < min_share_masked:
        return f"the mask removes {100 * share:.2g}% of the query dims (< {100 * min_share_masked:g}%): it masks almost nothing"
    return None


def _share_masked(qa, mask: QueryMask) -> float:
    """Share of all query dims the mask removes."""
    scores = qa.head_scores(mask.reading)
    if isinstance(mask, LowUtility):
        return mask.share_masked(scores)
    a = qa.loaded.anatomy
    return len(mask.heads(scores)) * dims_in_fraction(a.head_dim, mask.fraction) / (a.n_layers * a.n_heads * a.head_dim)


@measure(AccuracyByPosition)
def masked_accuracy_delta(qa, *, mask: QueryMask, mode: str, min_accuracy: float, min_share_masked: float,
                          no_harm: bool, mode_tolerance: float, seed: int = 0):
    """C5c/C5e/C5f: masked − original accuracy in points, averaged over gold positions;
    paired per question (all positions together), Tango's interval widened for that
    clustering. ``no_harm``: the claim is that the mask does not hurt, which a mask that
    changes no answer cannot show. ``mode``: the masking the check asks for."""
    correct, mode, agreement, not_verified = _correct(qa, mask, mode, mode_tolerance)
    base, masked = correct["none"], correct[mask.name]  # [positions, questions]
    d = stats.paired_proportion_difference(base.T, masked.T)
    est = stats.Estimate(100 * d.value, 100 * d.low, 100 * d.high, n=d.n, unit="questions")
    est.p_value = stats.mcnemar(base.flatten(), masked.flatten())
    est.extra = {"accuracy_original": (100 * base.mean(1)).tolist(), "accuracy_masked": (100 * masked.mean(1)).tolist(),
                 "mcnemar_p": est.p_value, "share_of_dims_masked": _share_masked(qa, mask), **d.extra}
    if isinstance(mask, RetrievalHeadDims):
        est.extra["retrieval_heads"] = len(mask.heads(qa.head_scores(mask.reading)))
    est.precondition = not_verified or _guards(qa, correct, mask, min_accuracy, min_share_masked)
    if not est.precondition and no_harm and d.extra["discordant_pairs"] == 0:
        est.precondition = "the mask changed no answer: it cannot show that masking does no harm (is it acting?)"
    return Measurement(est, _accuracy(qa, correct, mode), mode, [agreement] if agreement else [])


@measure(AccuracyByPosition)
def masked_position_retention(qa, *, mask: QueryMask, mode: str, min_accuracy: float, min_share_masked: float,
                              mode_tolerance: float, seed: int = 0):
    """C5f: retention (masked / original accuracy) with the gold in the last position minus
    with it in the first; bootstrap over questions. Unlike the difference of accuracy
    changes, it is not the unmasked primacy effect when masking floors accuracy everywhere:
    masked accuracy must be above the floor at one of the two positions."""
    correct, mode, agreement, not_verified = _correct(qa, mask, mode, mode_tolerance)
    base, masked = correct["none"], correct[mask.name]  # [positions, questions]

    def stat(b, m):
        return m[-1].mean() / b[-1].mean() - m[0].mean() / b[0].mean()

    rng = np.random.default_rng(seed)
    n = base.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(stat(base, masked))
        reps = [stat(base[:, i], masked[:, i]) for i in (rng.integers(0, n, n) for _ in range(stats.N_BOOT))]
    lo, hi = np.nanpercentile(reps, [2.5, 97.5])
    est = stats.Estimate(value, float(lo), float(hi), n=n, unit="questions")
    acc_b, acc_m = 100 * base.mean(1), 100 * masked.mean(1)
    est.extra = {"retention_by_position": (acc_m / np.where(acc_b > 0, acc_b, np.nan)).tolist(),
                 "accuracy_original": acc_b.tolist(), "accuracy_masked": acc_m.tolist()}
    floor = None
    if min(acc_b[0], acc_b[-1]) < min_accuracy:
        floor = (f"original accuracy at the first or last position ({acc_b[0]:.1f}%, {acc_b[-1]:.1f}%) is below "
                 f"the floor of {min_accuracy:g}%: no retention to compare")
    elif max(acc_m[0], acc_m[-1]) < min_accuracy:
        floor = (f"masked accuracy is below the floor of {min_accuracy:g}% at both the first and the last position "
                 f"({acc_m[0]:.1f}%, {acc_m[-1]:.1f}%): the gap would be the unmasked primacy effect (floor)")
    est.precondition = not_verified or floor or _guards(qa, correct, mask, min_accuracy, min_share_masked)
    return Measurement(est, _accuracy(qa, correct, mode), mode, [agreement] if agreement else [])
from . import dose as _dose  # noqa: E402,F401  (beyond the paper, issue 14: registers its measure and figure)
from . import critical as _critical  # noqa: E402,F401  (beyond the paper, issue 14: the critical dimension)



# --- beyond the paper, issue 19 (§3, §4): frequency use in activations, massive values ----
from . import activation_measures  # noqa: E402,F401  (registers its measures and figure kinds)
# --- beyond the paper, issue 19 (§1): are the retrieval heads the ones that matter ----
from . import head_ablation  # noqa: E402,F401  (registers head_masking and its figure)
# --- beyond the paper, issue 19 (§2): the ablation's form ----
from . import ablation_forms  # noqa: E402,F401  (registers ablation_form and its figure)
