"""Beyond the paper (issue 19, §1): are the retrieval heads the ones that matter? Whole
attention heads masked (TransformerLens-style interventions that always restore the model),
the top-k heads by the paper's retrieval score (§5.3) against k random heads of the same
layers, on the gold answer's teacher-forced log-prob (``ropedim.logprob``), paired per
question. Registered in ``ropedim.measures.MEASURES`` and ``ropedim.figures.DRAW`` on import
(``ropedim.measures`` imports this module once, at its end).

Two head-masking forms (the peers use both; the paper masks no whole heads):
- ``zero``: the head's attention output is set to 0 before ``o_proj`` (a post hook): the
  head adds nothing to the residual stream;
- ``uniform``: the head's post-RoPE query is set to 0 (``hooks.masked``), so its scores are
  all 0 and its attention is uniform over the causal keys (Wu et al.'s form): the head
  still writes, but the mean of the values it sees, not what it retrieves.

Statistic: mean over questions of [log p(gold | top-k masked) − mean over draws of log p(gold |
random-k masked)], gold positions averaged within a question; a bootstrap over questions
(``stats.mean_ci``). Below 0: the retrieval heads cost more than random heads of their layers.
Beside it (``accuracy=True``, the check's primary k): the same contrast in accuracy points,
greedy answers under the same interventions and questions (``Study.correctness_under``),
shown, not judged.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from . import figures as F
from . import stats
from .anatomy import mask_shape
from .figures import Payload, figure, model_colour
from .hooks import _hooked, masked, routed
from .logprob import Intervention
from .measures import Measurement, measure

__all__ = ["FORMS", "HeadMasking", "zero_heads", "uniform_heads", "head_intervention", "top_heads",
           "same_layer_draws", "any_layer_draws", "CONTROLS"]

FORMS = ("zero", "uniform")
# where the random heads are drawn: the issue's control (as many in each of the top heads' layers)
# or anywhere (a model with few heads per layer leaves the same-layer control little to draw: Gemma 3
# 270M has 4 per layer, so a layer holding 2 top heads always gives the same other 2)
CONTROLS = ("same-layer", "any-layer")


def _sorted(heads: Iterable) -> list[tuple[int, int]]:
    return sorted((int(l), int(h)) for l, h in heads)


@contextmanager
def zero_heads(model: torch.nn.Module, heads: Iterable) -> Iterator[None]:
    """Each (layer, head)'s attention output [B, S, H, Dh] set to 0 before ``o_proj``, at
    every position; the hooks are removed and the model's routing restored on exit."""
    by: dict[int, list[int]] = {}
    for l, h in _sorted(heads):
        by.setdefault(l, []).append(h)

    def make(hs):
        def post(mod, out, kw):
            out[:, :, hs] = 0
        return post

    with routed(model) as attns, _hooked(attns, "_ropedim_post", {l: make(hs) for l, hs in by.items()}):
        yield


def uniform_heads(model: torch.nn.Module, heads: Iterable):
    """Each (layer, head)'s post-RoPE query set to 0: every score 0, so attention uniform over
    the causal keys (and the sliding window, where the layer has one)."""
    m = torch.ones(mask_shape(model))
    for l, h in _sorted(heads):
        m[l, h] = 0
    return masked(model, m)


def head_intervention(name: str, form: str, heads: Iterable) -> Intervention:
    """An :class:`Intervention` masking ``heads`` in ``form`` (spec: the form's kind and the
    sorted heads; what determines it, so the cache keys hold it)."""
    heads = _sorted(heads)
    if form == "zero":
        kind, enter = "zero-heads-output", lambda model: zero_heads(model, heads)
    elif form == "uniform":
        kind, enter = "uniform-heads", lambda model: uniform_heads(model, heads)
    else:
        raise ValueError(f"unknown head-masking form {form!r}; known: {', '.join(FORMS)}")
    return Intervention(name, {"kind": kind, "heads": [list(x) for x in heads]}, enter)


def top_heads(scores: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` heads with the largest score [L, H] (ties: the lower flat index first)."""
    H = scores.shape[1]
    flat = torch.argsort(scores.flatten(), descending=True, stable=True)[:k]
    return [(int(i) // H, int(i) % H) for i in flat]


def same_layer_draws(top: list, n_heads: int, draws: int, seed: int) -> list[list[tuple[int, int]]]:
    """``draws`` seeded sets of random heads, as many in each layer as ``top`` has there,
    none of them in ``top``. Raises where a layer has too few other heads (no same-layer
    control exists)."""
    topset = set(top)
    g = np.random.default_rng(seed)
    layers = sorted({l for l, _ in top})
    out = []
    for _ in range(draws):
        rnd = []
        for l in layers:
            n = sum(1 for x in top if x[0] == l)
            pool = [h for h in range(n_heads) if (l, h) not in topset]
            if len(pool) < n:
                raise ValueError(f"layer {l}: {n} top heads but only {len(pool)} others to draw from")
            rnd += [(l, int(h)) for h in g.choice(pool, n, replace=False)]
        out.append(rnd)
    return out


def any_layer_draws(top: list, n_layers: int, n_heads: int, draws: int, seed: int) -> list[list[tuple[int, int]]]:
    """``draws`` seeded sets of ``len(top)`` random heads from every layer, none of them in ``top``."""
    topset = set(top)
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in topset]
    if len(pool) < len(top):
        raise ValueError(f"{len(top)} top heads but only {len(pool)} others to draw from")
    g = np.random.default_rng(seed)
    return [sorted(pool[int(i)] for i in g.choice(len(pool), len(top), replace=False)) for _ in range(draws)]


def possible_sets(top: list, n_layers: int, n_heads: int, control: str) -> int:
    """How many distinct random sets ``control`` can draw (1: the control is fixed, not random)."""
    if control == "any-layer":
        return math.comb(n_layers * n_heads - len(top), len(top))
    n = {}
    for l, _ in top:
        n[l] = n.get(l, 0) + 1
    return math.prod(math.comb(n_heads - c, c) for c in n.values())


# ---------------------------------------------------------------- payload

@dataclass
class HeadMasking(Payload):
    """Per intervention (top-k, each random draw) and gold position, the change of the mean
    gold log-prob from unmasked, with a bootstrap interval over questions."""
    model: str
    task: str
    form: str
    k: int
    heads: list  # the top-k heads [[layer, head], ...]
    change: dict = field(default_factory=dict)  # name -> [positions] mean (masked − none), nats
    low: dict = field(default_factory=dict)  # name -> [positions]
    high: dict = field(default_factory=dict)
    acc_change: dict = field(default_factory=dict)  # the same in accuracy points (empty: not measured)
    acc_low: dict = field(default_factory=dict)
    acc_high: dict = field(default_factory=dict)


F.PAYLOADS[HeadMasking.__name__] = HeadMasking


# ---------------------------------------------------------------- the measure

@measure(HeadMasking)
def head_masking(qa, *, form: str, fraction: float, draws: int, questions: int | None, seed: int = 0,
                 accuracy: bool = True, control: str = "same-layer"):
    """B-heads: the top ⌈``fraction`` · heads⌉ heads by the paper's retrieval score (§5.3)
    masked in ``form`` at every position, against as many random heads drawn from the same
    layers (``draws`` seeded draws, the top heads excluded), on the first ``questions`` kept
    questions (None: all) at every gold position; the difference log p(gold | top masked) −
    mean over draws of log p(gold | random masked), gold positions averaged within a question,
    a bootstrap over questions. Below 0: the retrieval heads matter more. ``control="any-layer"``
    draws the random heads from every layer instead (the check's alternative)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if control not in CONTROLS:
        raise ValueError(f"control must be one of {CONTROLS}, got {control!r}")
    sc = qa.head_scores().retrieval  # [L, H]
    L, H = sc.shape
    k = max(1, math.ceil(fraction * L * H))
    top = top_heads(sc, k)
    rand = same_layer_draws(top, H, draws, seed) if control == "same-layer" else any_layer_draws(top, L, H, draws, seed)
    ivs = [head_intervention(f"top{k}", form, top)]
    ivs += [head_intervention(f"random{k}-{d}", form, r) for d, r in enumerate(rand)]
    nq = qa.cfg.beyond_questions(questions)
    lp = qa.gold_logprob(ivs, nq)  # name -> [positions, questions]
    rnd = np.mean([lp[f"random{k}-{d}"] for d in range(draws)], axis=0)
    per_q = (lp[f"top{k}"] - rnd).mean(0)  # [questions]
    est = stats.mean_ci(per_q, seed=seed)
    est.unit = "questions"
    est.p_value = float(stats.sps.wilcoxon(per_q).pvalue) if np.any(per_q != 0) else 1.0
    paper = [(int(l), int(h)) for l, h in (sc > 0.5).nonzero().tolist()]
    per_layer = {l: sum(1 for x in paper if x[0] == l) for l in sorted({l for l, _ in paper})}
    short = [l for l, n in per_layer.items() if n > H - n]  # layers without as many other heads to draw
    full = [l for l, n in per_layer.items() if n == H]
    est.extra = {
        "form": {"zero": "zero output (the head's attention output set to 0 before o_proj)",
                 "uniform": "uniform attention (the head's post-RoPE query set to 0)"}[form],
        "k": k, "heads_total": L * H, "fraction": fraction, "draws": draws,
        "questions": int(per_q.size), "positions": int(lp["none"].shape[0]),
        "top_heads": [list(x) for x in top], "top_scores": [round(float(sc[l, h]), 4) for l, h in top],
        "control": {"same-layer": "random heads of the top heads' layers, as many in each",
                    "any-layer": "random heads of any layer"}[control],
        "random_heads": [[list(x) for x in r] for r in rand],
        "distinct_random_sets": len({tuple(r) for r in rand}),
        "possible_random_sets": possible_sets(top, L, H, control),
        "top_minus_none": float((lp[f"top{k}"] - lp["none"]).mean()),
        "random_minus_none": float((rnd - lp["none"]).mean()),
        "per_draw_random_minus_none": [round(float((lp[f"random{k}-{d}"] - lp["none"]).mean()), 4)
                                       for d in range(draws)],
        "per_draw_top_minus_random": [round(float((lp[f"top{k}"] - lp[f"random{k}-{d}"]).mean()), 4)
                                      for d in range(draws)],
        "paper_set_size": len(paper),
        "paper_set_layers": sorted(per_layer),
        "paper_set_same_layer_control": bool(paper) and not short,
        "paper_set_note": (
            "the paper's own set (retrieval score > 0.5) is empty" if not paper else
            f"the paper's own set (retrieval score > 0.5) has no same-layer random control: layers {short} hold "
            f"more of its heads than they have others" + (f" (every head of layers {full})" if full else "") +
            "; it is not measured"
            if short else "the paper's own set (retrieval score > 0.5) is not measured here (the top-k is)"),
    }
    payload = HeadMasking(qa.loaded.name, qa.cfg.task, form, k, [list(x) for x in top],
                          *stats.by_position({n: v - lp["none"] for n, v in lp.items() if n != "none"}, seed))
    if accuracy:
        acc = qa.correctness_under(ivs, nq)  # name -> 0/1 [positions, questions]
        racc = np.mean([acc[f"random{k}-{d}"] for d in range(draws)], axis=0)
        est.extra["accuracy"] = {
            "unit": "points", "measure": "best_subspan_em of greedy answers under each intervention",
            "unmasked": round(100 * float(acc["none"].mean()), 2),
            "contrast": stats.summary(100 * (acc[f"top{k}"] - racc).mean(0), seed),
            "top_minus_none": round(100 * float((acc[f"top{k}"] - acc["none"]).mean()), 2),
            "random_minus_none": round(100 * float((racc - acc["none"]).mean()), 2),
            "note": "shown beside the log-prob verdict, not judged: the same questions decide far fewer 0/1 changes",
        }
        payload.acc_change, payload.acc_low, payload.acc_high = stats.by_position(
            {n: 100 * (v - acc["none"]) for n, v in acc.items() if n != "none"}, seed, digits=2)
    return Measurement(est, payload)


# ---------------------------------------------------------------- figure

@figure(HeadMasking)
def head_masking_fig(payloads):
    """Per model, task and form: the change of the mean gold log-prob (top row) and of
    accuracy (bottom row, where measured) from unmasked at each gold position, the top-k
    retrieval heads masked (red) and each random same-layer draw (grey), with bootstrap
    intervals over questions."""
    panels = sorted(F._first_per(payloads, lambda p: (p.model, p.task, p.form)).items())
    rows = [("change", "low", "high", "Δ mean gold log-prob (nats)")]
    if any(p.acc_change for _, p in panels):
        rows.append(("acc_change", "acc_low", "acc_high", "Δ accuracy (points)"))
    n = len(panels)
    fig, axes = F._subplots(n * len(rows), 5.0, 3.6, cols=n)
    for r, (mean, low, high, ylabel) in enumerate(rows):
        for ax, ((model, task, form), p) in zip(axes[r * n:(r + 1) * n], panels):
            means, lows, highs = getattr(p, mean), getattr(p, low), getattr(p, high)
            for j, name in enumerate(means):
                top = name.startswith("top")
                v = np.asarray(means[name])
                x = np.arange(1, len(v) + 1) + (0 if top else (j - len(means) / 2) * 0.04)
                err = np.abs(np.stack([v - np.asarray(lows[name]), np.asarray(highs[name]) - v]))
                ax.errorbar(x, v, yerr=err, marker="o", ms=4 if top else 3, capsize=2, lw=1.6 if top else 0.8,
                            color=model_colour(model) if top else "gray", alpha=1 if top else 0.6,
                            label=f"top {p.k} by retrieval score" if top else ("random same-layer draws" if j == 1
                                                                                else None))
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks([1, 2, 3], ["first", "middle", "last"])
            ax.set_xlabel("gold position")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model} ({task}): {form} heads", fontsize=9)
            ax.legend(frameon=False, fontsize=7)
    fig.suptitle("Retrieval heads masked vs random heads of the same layers (beyond the paper)")
    return fig
