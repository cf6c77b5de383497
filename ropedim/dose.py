"""Beyond the paper (issue 14, part 1): the dose-response of the gold answer's
log-probability to masking k query dims of the retrieval heads, first k (the
highest-frequency pairs) against last k against k random pairs (the control).

The paper masks the first/last 16 (32) of 128 dims once (§5.4, Table 2). "The first dims
are useless for long-distance retrieval" is only informative against what masking *any* k
dims costs: k random pairs of the same heads, several seeded draws. Here, for k = D/16,
D/8, D/4, D/2 of a head of D dims (whole rotary pairs, θ order as everywhere in ropedim):

- masks: the retrieval heads (score above the threshold, as C5e/C5f), the first k, the
  last k, or k random pairs drawn per head (``draws`` seeded draws); the query is masked
  after RoPE, as the retrieval-head masks of C5e/C5f are: whole pairs commute with RoPE,
  so before and after give the same query;
- measure: log p(gold answer | prompt), teacher-forced (``ropedim.logprob``), paired per
  question; a question appears at every gold position, so intervals resample questions
  (``ropedim.stats.cluster_bootstrap``);
- mode: as the masks of C5e/C5f in the run's profile. ``fast`` (the default profile): the
  context is prefilled once, unmasked, and every mask continues it from the question on
  (``ropedim.logprob.fast_gold_logprob``, the shared-context machinery of the fast sweep), so the
  whole curve costs one prefill per prompt and one pass over question and answer per
  mask; ``faithful`` (``--profile paper``): the mask at every position
  (``Study.gold_logprob``, one forward pass per prompt and mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import stats
from .figures import PAYLOADS, Payload, _subplots, figure, model_colour
from .logprob import Intervention
from .measures import Measurement, NotApplicable, measure
from .qa.masks import theta_end_mask
from .retrieval import retrieval_heads
from .rope import dims_in_fraction

__all__ = ["DoseResponse", "dose_masks", "random_pairs_mask", "dose_logprobs",
           "dose_response", "questions_needed"]

WHICH = ("first", "random", "last")


# ---------------------------------------------------------------- masks

def random_pairs_mask(anatomy, k: int, heads, seed: int) -> torch.Tensor:
    """[L, H, Dh] mask zeroing ``k`` coordinates (k / 2 whole rotary pairs, drawn uniformly
    without replacement among the head's pairs in θ order, independently per head) of each
    (layer, head) in ``heads``; seeded by ``seed`` alone (the same heads and seed give the
    same mask)."""
    a = anatomy
    if k % 2 or not 0 <= k <= a.head_dim:
        raise ValueError(f"k must be an even number in [0, {a.head_dim}], got {k}")
    rng = np.random.default_rng(seed)
    mask = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    for layer, head in sorted(heads):
        pairs = torch.as_tensor(rng.choice(a.head_dim // 2, k // 2, replace=False))
        mask[layer, head, torch.isin(a.rank[layer], pairs)] = 0.0
    return mask


def dose_masks(anatomy, heads, fractions, draws: int, seed: int) -> dict[str, torch.Tensor]:
    """name -> [L, H, Dh] mask: ``first-{k}``, ``last-{k}`` and ``random{d}-{k}`` (draw d)
    for each fraction of the head (k coordinates, whole pairs)."""
    out = {}
    for f in fractions:
        k = dims_in_fraction(anatomy.head_dim, f)
        out[f"first-{k}"] = theta_end_mask(anatomy, "first", k, heads)
        out[f"last-{k}"] = theta_end_mask(anatomy, "last", k, heads)
        for d in range(draws):
            out[f"random{d}-{k}"] = random_pairs_mask(anatomy, k, heads, seed=1_000_003 * (seed + 1) + 101 * d + k)
    return out


def dose_logprobs(qa, masks: dict[str, torch.Tensor], mode: str, questions: int | None = None) -> dict[str, np.ndarray]:
    """{name: [positions, questions]} gold log-prob under each mask and unmasked ("none").
    ``mode``: "fast" (``Study.gold_logprob_fast``, all masks in one cached step) or
    "faithful" (``Study.gold_logprob``, each mask cached on its own)."""
    if mode == "faithful":
        return qa.gold_logprob([Intervention.query_mask(n, m) for n, m in masks.items()], questions)
    if mode != "fast":
        raise ValueError(f"mode must be 'fast' or 'faithful', got {mode!r}")
    return qa.gold_logprob_fast(masks, questions)


# ---------------------------------------------------------------- statistics

def _by_question(diff: np.ndarray, seed: int) -> stats.Estimate:
    """Mean of ``diff`` [positions, questions] over both; interval from a bootstrap over
    questions (a question's positions together)."""
    est = stats.cluster_bootstrap(diff.shape[1], lambda idx: float(diff[:, idx].mean()), seed=seed)
    est.unit = "questions"
    return est


def questions_needed(diff: np.ndarray, seed: int = 0) -> float | None:
    """Questions (clustered as in :func:`_by_question`) at which the 95% interval of the
    mean of ``diff`` [positions, questions] would just exclude 0 at the measured effect and
    spread: n · (half-width / |effect|)² (the variance formula: half-width ∝ 1/√n)."""
    est = _by_question(diff, seed)
    hw = (est.high - est.low) / 2
    if est.value == 0 or not np.isfinite(hw):
        return None
    return float(diff.shape[1] * (hw / abs(est.value)) ** 2)


def _accuracy_of_c5e(qa, name: str):
    """C5e's masked accuracy [positions, questions] of mask ``name`` and unmasked, in the
    mode C5e uses, only where it is already computed (cached); else None."""
    mode = qa.mode_of("fast")
    got = qa.cached_correctness(mode)
    if not got or name not in got:
        return None
    return np.asarray(got["none"], float), np.asarray(got[name], float), mode


# ---------------------------------------------------------------- the figure

@dataclass
class DoseResponse(Payload):
    """Gold log-prob change (masked − unmasked, nats) against the number of masked dims,
    first / random / last, per gold position and averaged."""
    model: str
    task: str
    mode: str
    head_dim: int
    k: list[int]  # coordinates masked per retrieval head
    panels: list[str]  # "gold 1", ..., "average"
    mean: dict[str, list[list[float]]]  # which -> [panel][k]
    low: dict[str, list[list[float]]]
    high: dict[str, list[list[float]]]
    n: int  # questions
    heads: int  # retrieval heads masked
    draws: int
    frontier: dict[str, list[list[float]]] = field(default_factory=dict)  # which -> [k][score FLOPs saved share,
    #                                          K-cache saved share, Δ log-prob, low, high] (ropedim.prune.savings)
    acc_mean: dict[str, list[list[float]]] = field(default_factory=dict)  # which -> [panel][k] Δ accuracy, points
    acc_low: dict[str, list[list[float]]] = field(default_factory=dict)
    acc_high: dict[str, list[list[float]]] = field(default_factory=dict)
    acc_original: list[float] = field(default_factory=list)  # [panel] unmasked accuracy, %


PAYLOADS["DoseResponse"] = DoseResponse
STYLE = {"first": dict(color="tab:blue", marker="o"), "random": dict(color="tab:gray", marker="s", ls="--"),
         "last": dict(color="tab:red", marker="^"), "all-first": dict(color="black", marker="x", ls=":")}


def _curves(axes, f: DoseResponse, mean, low, high, titles: list[dict], ylabel: str) -> None:
    """One panel per gold position (and the average): first / random / last against k."""
    for p, (ax, title) in enumerate(zip(axes, titles)):
        for which in WHICH:
            m = np.asarray(mean[which][p])
            err = np.stack([m - np.asarray(low[which][p]), np.asarray(high[which][p]) - m])
            label = f"{which} k" + (f" ({f.draws} draws)" if which == "random" else "")
            ax.errorbar(f.k, m, yerr=err, capsize=2, lw=1.3, label=label, **STYLE[which])
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xticks(f.k, [str(k) for k in f.k])
        ax.set_title(**title)
        ax.set_xlabel(f"dims masked per retrieval head (of {f.head_dim})")
    axes[0].set_ylabel(ylabel)
    axes[0].legend(frameon=False, fontsize=8)


@figure(DoseResponse)
def dose_curve(payloads):
    """Log-prob change against k, three curves, one panel per gold position and the average."""
    f = payloads[0]
    fig, axes = _subplots(len(f.panels) + bool(f.frontier), 3.8, 3.2, cols=5, sharey=True)
    _curves(axes, f, f.mean, f.low, f.high, [dict(label=t) for t in f.panels], "Δ log p(gold answer), nats")
    if f.frontier:
        ax = axes[-1]
        for which in [w for w in (*WHICH, "all-first") if w in f.frontier]:
            r = np.asarray(f.frontier[which])  # [k, 5]
            ax.errorbar(100 * r[:, 0], r[:, 2], yerr=[r[:, 2] - r[:, 3], r[:, 4] - r[:, 2]], capsize=2, lw=1.3,
                        label=f"{which} k" + (" (every head)" if which == "all-first" else ""), **STYLE[which])
            if which in ("first", "all-first"):
                for x, y, kc in zip(100 * r[:, 0], r[:, 2], 100 * r[:, 1]):
                    ax.annotate(f"K {kc:.1f}%", (x, y), fontsize=6, xytext=(3, 4), textcoords="offset points")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("attention-score multiply-adds saved (%, all heads)")
        ax.set_title("pruning frontier (K: K-cache saved)", fontsize=9)
        if "all-first" in f.frontier:
            ax.legend(frameon=False, fontsize=7)
    fig.suptitle(f"Dose-response: {f.model} ({f.task}, {f.n} questions, {f.heads} retrieval heads, {f.mode} mode)",
                 color=model_colour(f.model))
    return fig


# ---------------------------------------------------------------- the measure

CONTRASTS = {"first-vs-random": ("first", "random"), "random-vs-last": ("random", "last")}


@measure(DoseResponse)
def dose_response(qa, *, contrast: str, fractions: tuple, headline: float, draws: int, retrieval_threshold: float,
                  mode: str, questions: int | None = None, all_heads_frontier: bool = False, accuracy: bool = False,
                  seed: int = 0):
    """Beyond the paper: at the headline fraction of the head (k = D/8, the paper's 16 of
    128), log p(gold) with the ``contrast``'s first mask − with its second ("first-vs-random":
    first k − k random pairs, the mean over ``draws`` draws; "random-vs-last": random − last
    k), averaged over gold positions and questions; paired per question, bootstrap over
    questions. The whole curve (every fraction, per position) is in the record and the
    figure. ``all_heads_frontier``: also the first k of every head (``all-first-{k}``), for
    the pruning frontier only. ``accuracy``: also the accuracy curves (a decoding per prompt
    and mask of the curve, in ``mode``; ``Study.correctness_of``), shown beside the log-prob
    curves, with the questions each measure needs at the headline k from the same questions."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {sorted(CONTRASTS)}, got {contrast!r}")
    if headline not in fractions:
        raise ValueError(f"headline fraction {headline} is not among the fractions {fractions}")
    if draws < 1:
        raise ValueError(f"need at least one random draw, got {draws}")
    a = qa.loaded.anatomy
    scores = qa.head_scores()
    heads = retrieval_heads(scores.retrieval, retrieval_threshold)
    if not heads:
        raise NotApplicable(f"no retrieval head scores above {retrieval_threshold}: nothing to mask")
    mode = qa.mode_of(mode)
    masks = dose_masks(a, heads, fractions, draws, seed)
    if all_heads_frontier:
        every = [(layer, h) for layer in range(a.n_layers) for h in range(a.n_heads)]
        masks.update({f"all-first-{k}": theta_end_mask(a, "first", k, every)
                      for k in (dims_in_fraction(a.head_dim, f) for f in fractions)})
    lp = dose_logprobs(qa, masks, mode, qa.cfg.beyond_questions(questions))
    none = lp["none"]
    ks = [dims_in_fraction(a.head_dim, f) for f in fractions]
    curves = {}  # which -> k -> [positions, questions] change
    for k in ks:
        curves.setdefault("first", {})[k] = lp[f"first-{k}"] - none
        curves.setdefault("last", {})[k] = lp[f"last-{k}"] - none
        curves.setdefault("random", {})[k] = np.mean([lp[f"random{d}-{k}"] for d in range(draws)], 0) - none
        if all_heads_frontier:
            curves.setdefault("all-first", {})[k] = lp[f"all-first-{k}"] - none
    k0 = dims_in_fraction(a.head_dim, headline)
    x, y = CONTRASTS[contrast]
    diff = curves[x][k0] - curves[y][k0]  # [positions, questions]
    est = _by_question(diff, seed)

    n_pos, n_q = none.shape
    panels = [f"gold at {p + 1}" for p in qa.cfg.positions] + ["average"]
    mean, low, high = ({w: [] for w in WHICH} for _ in range(3))
    for which in WHICH:
        for p in range(n_pos + 1):
            ms, ls, hs = [], [], []
            for k in ks:
                c = curves[which][k] if p == n_pos else curves[which][k][p:p + 1]
                e = _by_question(c, seed)
                ms.append(e.value), ls.append(e.low), hs.append(e.high)
            mean[which].append(ms), low[which].append(ls), high[which].append(hs)
    per_k = {}
    for k in ks:
        e = _by_question(curves[x][k] - curves[y][k], seed)
        per_k[str(k)] = {"value": e.value, "interval": e.interval,
                         "by_position": (curves[x][k] - curves[y][k]).mean(1).tolist()}
    per_draw = [_by_question(curves[x][k0] - (lp[f"random{d}-{k0}"] - none) if y == "random"
                             else (lp[f"random{d}-{k0}"] - none) - curves[y][k0], seed).interval
                for d in range(draws)]
    est.extra = {
        "mode": mode, "k_headline": k0, "k": ks, "head_dim": a.head_dim, "draws": draws,
        "retrieval_heads": len(heads), "questions": n_q, "positions_1based": [p + 1 for p in qa.cfg.positions],
        "by_position": diff.mean(1).tolist(), "contrast_by_k": per_k, "per_draw_interval": per_draw,
        "mean_logprob_unmasked": float(none.mean()),
        "change_by_k": {w: {str(k): float(curves[w][k].mean()) for k in ks} for w in curves},
        "mask_seeds": "random{d}-{k}: numpy default_rng(1_000_003·(seed + 1) + 101·d + k), k/2 pairs per head",
    }
    est.extra.update(_power(qa, curves["first"][k0], seed))
    frontier = _frontier(masks, curves, ks, draws, a.n_kv_heads, seed)
    est.extra["frontier"] = {w: [dict(zip(("k", "score_flops_saved", "k_cache_saved", "change", "low", "high"),
                                          [k, *row])) for k, row in zip(ks, rows)] for w, rows in frontier.items()}
    fig = DoseResponse(qa.loaded.name, qa.cfg.task, mode, a.head_dim, ks, panels, mean, low, high, n_q, len(heads),
                       draws, frontier)
    if accuracy:
        _accuracy_curves(qa, fig, est, {n: m for n, m in masks.items() if not n.startswith("all-")}, mode,
                         qa.cfg.beyond_questions(questions), ks, draws, (x, y), k0, curves["first"][k0], seed)
    return Measurement(est, fig, mode)


def _accuracy_curves(qa, fig: DoseResponse, est, masks, mode, questions, ks, draws, contrast, k0, first_lp, seed):
    """The accuracy curves of the same masks on the same questions (points), into the
    figure's payload and the record: per k and which, the change from unmasked; the
    contrast's accuracy difference at the headline k; and the questions each measure would
    need to decide C5e's contrast there (first k − unmasked), from these same questions."""
    acc = qa.correctness_of(masks, mode, questions)  # name -> [positions, questions] 0/1
    none = 100 * acc["none"]
    curves = {}
    for k in ks:
        curves.setdefault("first", {})[k] = 100 * acc[f"first-{k}"] - none
        curves.setdefault("last", {})[k] = 100 * acc[f"last-{k}"] - none
        curves.setdefault("random", {})[k] = 100 * np.mean([acc[f"random{d}-{k}"] for d in range(draws)], 0) - none
    n_pos = none.shape[0]
    for which in WHICH:
        fig.acc_mean[which], fig.acc_low[which], fig.acc_high[which] = [], [], []
        for p in range(n_pos + 1):
            es = [_by_question(curves[which][k] if p == n_pos else curves[which][k][p:p + 1], seed) for k in ks]
            fig.acc_mean[which].append([e.value for e in es])
            fig.acc_low[which].append([e.low for e in es])
            fig.acc_high[which].append([e.high for e in es])
    fig.acc_original = [*none.mean(1).tolist(), float(none.mean())]
    x, y = contrast
    c = _by_question(curves[x][k0] - curves[y][k0], seed)
    first = curves["first"][k0]
    est.extra.update({
        "accuracy_mode": mode, "accuracy_original": fig.acc_original,
        "accuracy_change_by_k": {w: {str(k): float(curves[w][k].mean()) for k in ks} for w in curves},
        "accuracy_contrast": {"value": c.value, "interval": c.interval, "unit": "points"},
        "questions_needed_same_questions": {
            "logprob": questions_needed(first_lp, seed), "accuracy": questions_needed(first, seed),
            "note": (f"C5e's contrast at k = {k0} (first k masked − unmasked) on the same {first.shape[1]} questions: "
                     "the n at which each measure's 95% interval would just exclude 0 (variance formula); None "
                     "where the measured change is 0 (accuracy: no answer changed)")},
    })


@figure(DoseResponse)
def dose_accuracy(payloads):
    """Accuracy change against k, first / random / last, per gold position and averaged
    (the same masks and questions as the log-prob curves)."""
    f = payloads[0]
    if not f.acc_mean:
        fig, ax = _subplots(1, 4.0, 2.0)
        ax[0].axis("off")
        ax[0].text(0.5, 0.5, "accuracy curves not measured in this run", ha="center", va="center")
        return fig
    fig, axes = _subplots(len(f.panels), 3.8, 3.2, cols=5, sharey=True)
    _curves(axes, f, f.acc_mean, f.acc_low, f.acc_high,
            [dict(label=f"{t} (unmasked {a:.0f}%)", fontsize=9) for t, a in zip(f.panels, f.acc_original)],
            "Δ accuracy, points")
    fig.suptitle(f"Dose-response, accuracy: {f.model} ({f.task}, {f.n} questions, {f.mode} mode)",
                 color=model_colour(f.model))
    return fig


def _frontier(masks, curves, ks, draws, n_kv_heads, seed) -> dict[str, list[list[float]]]:
    """which -> per k: [share of attention-score multiply-adds saved, share of the K cache
    saved (``ropedim.prune.savings``; random pairs: the mean over draws), Δ log-prob and its
    interval]: what pruning those dims would save against what masking them costs."""
    from .prune import savings
    out = {}
    for which in [w for w in (*WHICH, "all-first") if w in curves]:
        rows = []
        for k in ks:
            names = [f"random{d}-{k}" for d in range(draws)] if which == "random" else [f"{which}-{k}"]
            sv = [savings(masks[n] != 0, n_kv_heads) for n in names]
            e = _by_question(curves[which][k], seed)
            rows.append([float(np.mean([x["score_flops"] for x in sv])), float(np.mean([x["k_cache"] for x in sv])),
                         e.value, e.low, e.high])
        out[which] = rows
    return out


def _power(qa, first_change: np.ndarray, seed: int) -> dict:
    """How many questions each measure needs to decide C5e's contrast at k = D/8 (first
    eighth masked − unmasked): the log-prob change here against C5e's accuracy change,
    both by the variance formula on their own clustered intervals."""
    out = {"questions_needed_logprob": questions_needed(first_change, seed)}
    acc = _accuracy_of_c5e(qa, "first16")
    if acc is None:
        out["questions_needed_accuracy"] = None
        out["questions_needed_source"] = "C5e's first16 answers are not in the cache: no accuracy comparison"
        return out
    base, masked_, mode = acc
    if masked_.shape[0] != first_change.shape[0]:
        out["questions_needed_accuracy"] = None
        out["questions_needed_source"] = "C5e's answers cover other gold positions: no accuracy comparison"
        return out
    out["questions_needed_accuracy"] = questions_needed(100 * (masked_ - base), seed)
    out["accuracy_change_first16"] = float(100 * (masked_ - base).mean())
    out["questions_needed_source"] = (f"variance formula n·(half-width/|effect|)² on each measure's bootstrap "
                                      f"over questions; accuracy: C5e's cached first16 answers ({mode} mode, "
                                      f"{masked_.shape[1]} questions); log-prob: the {first_change.shape[1]} "
                                      f"questions here")
    return out

