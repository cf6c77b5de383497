"""Beyond the paper (issue 19, §2): does C5e/C5f's verdict survive the ablation's form?

The paper takes dims away from a retrieval head by zeroing them in the query (§5.4, "mask
... dimensions of the query"), whole rotary pairs by θ rank. Three other forms a reader
could use, each an :class:`ropedim.logprob.Intervention` that restores the model on exit:

- ``mean-pairs-query``: each masked dim of the query, before RoPE (after any q norm),
  replaced by its mean over the analysis tokens (Jin et al.'s mean ablation; the means are
  ``ActivationStats.q_mean``) instead of 0;
- ``zero-storage-query``: as many coordinates zeroed, but the first/last k by *storage
  index*, before RoPE: what a reader who assumes interleaved pairs would mask on a
  half-split model (HF's layout: storage j rotates with j + P), so it takes one coordinate
  of twice as many pairs;
- ``zero-pairs-query-key``: the paper's pairs zeroed in the query and in the key of the KV
  head each retrieval head reads. A 0/1 mask m gives (q⊙m)·(k⊙m) = (q⊙m)·k, so in the
  masked head itself this equals the query-only form; it differs only through the other
  query heads that share the KV head (GQA), whose keys lose those dims too.

Measure: the gold answer's teacher-forced log-prob (``Study.gold_logprob``: every position,
the paper's faithful masking), per question, gold positions averaged within a question,
a bootstrap over questions: the verdict. Beside it, the accuracy of the same forms, masks
and questions (``Study.correctness_under``: greedy answers under each form at every
position), in points with the same interval: the paper's own measure, shown, not judged
(10 questions decide few accuracy changes).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from . import figures as F
from . import stats
from .figures import Payload, figure, model_colour
from .generation import mask_digest
from .hooks import BeforeRoPE, masked, replaced_before_rope
from .logprob import Intervention
from .measures import Measurement, measure
from .qa.masks import RetrievalHeadDims

__all__ = ["FORMS", "PRIMARY_FORM", "AblationForms", "storage_mask", "key_mask", "form_intervention",
           "mean_replaced", "zero_keys"]

FORMS = {
    "zero-pairs-query": "zero, whole rotary pairs by θ rank, the query only (the paper's form)",
    "mean-pairs-query": "each masked dim replaced by its mean over the analysis tokens (Jin et al.), whole pairs, "
                        "the query only, before RoPE",
    "zero-storage-query": "zero, the first/last k coordinates by storage index (a reader who assumes interleaved "
                          "pairs), the query only, before RoPE",
    "zero-pairs-query-key": "zero, whole pairs, in the query and in the key of the KV head each masked head reads",
}
PRIMARY_FORM = "zero-pairs-query"
CONTRASTS = ("first-vs-last", "last")


# ---------------------------------------------------------------- the masks of each form

def storage_mask(pairs: torch.Tensor, which: str) -> torch.Tensor:
    """[L, H, Dh]: in every head where the θ-rank mask ``pairs`` zeroes k coordinates, the
    first (``which`` = "first") or last k storage indices zeroed instead."""
    out = torch.ones_like(pairs, dtype=torch.float32)
    k = (pairs == 0).sum(-1)  # [L, H]
    for l, h in (k > 0).nonzero().tolist():
        n = int(k[l, h])
        if which == "first":
            out[l, h, :n] = 0
        elif which == "last":
            out[l, h, -n:] = 0
        else:
            raise ValueError(f"which must be 'first' or 'last', got {which!r}")
    return out


def key_mask(query_mask: torch.Tensor, group: torch.Tensor, n_kv: int) -> torch.Tensor:
    """[L, KVH, Dh]: a key dim is zeroed where any query head reading that KV head (``group``
    [H]: the KV head of each query head) zeroes it."""
    L, _, D = query_mask.shape
    out = torch.ones(L, n_kv, D)
    for g in range(n_kv):
        heads = (group == g).nonzero().flatten()
        if len(heads):
            out[:, g] = query_mask[:, heads].float().amin(1)
    return out


def mean_replaced(name: str, mask: torch.Tensor, means: torch.Tensor) -> Intervention:
    """The query's dims where ``mask`` [L, H, Dh] is 0 replaced, before RoPE, by ``means``
    [L, H, Dh] (storage order) at every position."""
    mask, means = mask.float().cpu(), means.float().cpu()
    return Intervention(name, {"kind": "mean-replace-query-dims", "mask": mask_digest(mask),
                               "values": mask_digest(means)},
                        lambda model: replaced_before_rope(model, "q", mask, means))


def zero_keys(model, kmask: torch.Tensor):
    """The key's dims where ``kmask`` [L, KVH, Dh] is 0 zeroed before RoPE, every position."""
    return replaced_before_rope(model, "k", kmask, torch.zeros_like(kmask))


def form_intervention(name: str, form: str, pairs: torch.Tensor, which: str, anatomy, means=None) -> Intervention:
    """The intervention that takes the dims of the θ-rank mask ``pairs`` (``which`` end)
    away in ``form`` (``FORMS``)."""
    pairs = pairs.float().cpu()
    if form == "zero-pairs-query":
        return Intervention.query_mask(name, pairs)
    if form == "zero-storage-query":
        return Intervention.query_mask(name, BeforeRoPE(storage_mask(pairs, which)))
    if form == "mean-pairs-query":
        if means is None:
            raise ValueError("the mean form needs the query's mean per dim (ActivationStats.q_mean)")
        return mean_replaced(name, pairs, means)
    if form == "zero-pairs-query-key":
        km = key_mask(pairs, anatomy.group, anatomy.n_kv_heads)

        @contextmanager
        def enter(model):
            with ExitStack() as st:
                st.enter_context(masked(model, pairs))
                st.enter_context(zero_keys(model, km))
                yield
        return Intervention(name, {"kind": "zero-query-and-key", "mask": mask_digest(pairs),
                                   "key": mask_digest(km)}, enter)
    raise ValueError(f"unknown ablation form {form!r}; known: {', '.join(FORMS)}")


# ---------------------------------------------------------------- payload

@dataclass
class AblationForms(Payload):
    """Per form, mask (first/last) and gold position: the change of the mean gold log-prob
    from unmasked, with a bootstrap interval over questions."""
    model: str
    task: str
    k: int  # coordinates masked per retrieval head
    heads: int  # retrieval heads masked
    change: dict = field(default_factory=dict)  # "form/first" -> [positions] mean (masked − none), nats
    low: dict = field(default_factory=dict)
    high: dict = field(default_factory=dict)
    acc_change: dict = field(default_factory=dict)  # the same, accuracy points (empty: not measured)
    acc_low: dict = field(default_factory=dict)
    acc_high: dict = field(default_factory=dict)


F.PAYLOADS[AblationForms.__name__] = AblationForms


# ---------------------------------------------------------------- the measure

@measure(AblationForms)
def ablation_form(qa, *, form: str, contrast: str, fraction: float, retrieval_threshold: float,
                  questions: int | None, seed: int = 0):
    """B-forms: C5e/C5f's masks (the first/last ``fraction`` of each retrieval head's dims,
    score > ``retrieval_threshold``) taken away in ``form``, at every position, on the first
    ``questions`` kept questions at every gold position; per question (gold positions
    averaged) ``contrast`` "first-vs-last": Δ log p(gold | first masked) − Δ(last masked)
    (above 0: the first dims cost less, C5e and C5f together), or "last": Δ(last masked)
    (below 0: the last dims are needed, C5f). Every form is measured (cached per form) so
    the figure shows them side by side."""
    if form not in FORMS:
        raise ValueError(f"unknown ablation form {form!r}; known: {', '.join(FORMS)}")
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; known: {', '.join(CONTRASTS)}")
    anatomy, scores = qa.loaded.anatomy, qa.head_scores()
    masks = {w: RetrievalHeadDims(w, w, fraction, retrieval_threshold).build(anatomy, scores)
             for w in ("first", "last")}
    n_heads = int(((masks["first"] == 0).sum(-1) > 0).sum())
    k = int((masks["first"] == 0).sum(-1).max()) if n_heads else 0
    est_extra = {"form": FORMS[form], "retrieval_heads": n_heads, "coordinates_per_head": k}
    if n_heads == 0:
        est = stats.Estimate(float("nan"), float("nan"), float("nan"), n=0, unit="questions", extra=est_extra,
                             precondition=f"no head has a retrieval score above {retrieval_threshold}: nothing to mask")
        return Measurement(est, AblationForms(qa.loaded.name, qa.cfg.task, 0, 0))
    means = qa.activation_stats().q_mean
    ivs = [form_intervention(f"{f}/{w}", f, masks[w], w, anatomy, means) for f in FORMS for w in ("first", "last")]
    nq = qa.cfg.beyond_questions(questions)
    lp = qa.gold_logprob(ivs, nq)  # name -> [positions, questions]
    d = {name: v - lp["none"] for name, v in lp.items() if name != "none"}

    def contrasted(changes, f):  # per question, gold positions averaged
        first, last = changes[f"{f}/first"].mean(0), changes[f"{f}/last"].mean(0)
        return first - last if contrast == "first-vs-last" else last

    first, last = d[f"{form}/first"].mean(0), d[f"{form}/last"].mean(0)  # [questions]
    per_q = contrasted(d, form)
    est = stats.mean_ci(per_q, seed=seed)
    est.unit = "questions"
    est.p_value = float(stats.sps.wilcoxon(per_q).pvalue) if np.any(per_q != 0) else 1.0
    kv = key_mask(masks["first"], anatomy.group, anatomy.n_kv_heads)
    shared = [(l, h) for l in range(anatomy.n_layers) for h in range(anatomy.n_heads)
              if bool((kv[l, int(anatomy.group[h])] == 0).any()) and bool((masks["first"][l, h] == 1).all())]
    est.extra = {
        **est_extra, "contrast": contrast, "questions": int(per_q.size), "positions": int(lp["none"].shape[0]),
        "first_minus_none": float(first.mean()), "last_minus_none": float(last.mean()),
        "by_form": {f: {"first_minus_none": round(float(d[f"{f}/first"].mean()), 4),
                        "last_minus_none": round(float(d[f"{f}/last"].mean()), 4)} for f in FORMS},
        "query_key_other_heads": len(shared),
        "query_key_note": (f"the key mask also reaches {len(shared)} query heads that share a KV head with a "
                           "retrieval head (GQA); in the retrieval heads themselves it equals the query-only form"),
    }
    acc = qa.correctness_under(ivs, nq)  # name -> 0/1 [positions, questions]
    da = {name: 100 * (v - acc["none"]) for name, v in acc.items() if name != "none"}

    est.extra["accuracy"] = {
        "unit": "points", "measure": "best_subspan_em of greedy answers under each form at every position",
        "unmasked": round(100 * float(acc["none"].mean()), 2),
        "contrast": stats.summary(contrasted(da, form), seed),
        "by_form": {f: {"contrast": stats.summary(contrasted(da, f), seed),
                        "first_minus_none": round(float(da[f"{f}/first"].mean()), 2),
                        "last_minus_none": round(float(da[f"{f}/last"].mean()), 2),
                        "answers_changed": int(sum(((acc[f"{f}/{w}"] != acc["none"]).sum()) for w in ("first", "last")))}
                    for f in FORMS},
        "note": "shown beside the log-prob verdict, not judged: the same questions decide far fewer 0/1 changes",
    }
    return Measurement(est, AblationForms(qa.loaded.name, qa.cfg.task, k, n_heads, *stats.by_position(d, seed),
                                          *stats.by_position(da, seed, digits=2)))


# ---------------------------------------------------------------- figure

@figure(AblationForms)
def ablation_forms_fig(payloads):
    """Per model and task: the change of the mean gold log-prob from unmasked (top row) and
    of accuracy (bottom row, where measured), each form's first-k (light) and last-k (dark)
    masks of the retrieval heads, per gold position, with bootstrap intervals over questions."""
    panels = sorted(F._first_per([p for p in payloads if p.change], lambda p: (p.model, p.task)).items())
    rows = [("change", "low", "high", "Δ mean gold log-prob (nats)")]
    if any(p.acc_change for _, p in panels):
        rows.append(("acc_change", "acc_low", "acc_high", "Δ accuracy (points)"))
    n = max(1, len(panels))
    fig, axes = F._subplots(n * len(rows), 6.0, 3.8, cols=n)
    for r, (mean, low, high, ylabel) in enumerate(rows):
        for ax, ((model, task), p) in zip(axes[r * n:(r + 1) * n], panels):
            _form_bars(ax, model, p, getattr(p, mean), getattr(p, low), getattr(p, high))
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model} ({task}): {p.heads} retrieval heads, {p.k} coords each", fontsize=9)
    fig.suptitle("C5e/C5f's masks under four ablation forms (beyond the paper)")
    return fig


def _form_bars(ax, model, p: AblationForms, mean: dict, low: dict, high: dict) -> None:
    """Each form's first-k (light) and last-k (dark) bars per gold position, with intervals."""
    forms = [f for f in FORMS if f"{f}/first" in mean]
    width = 0.8 / (2 * max(1, len(forms)))
    for j, f in enumerate(forms):
        for s, which in enumerate(("first", "last")):
            v = np.asarray(mean[f"{f}/{which}"])
            x = np.arange(len(v)) + (2 * j + s - len(forms) + 0.5) * width
            err = np.abs(np.stack([v - np.asarray(low[f"{f}/{which}"]), np.asarray(high[f"{f}/{which}"]) - v]))
            ax.bar(x, v, width, yerr=err, capsize=1.5, color=model_colour(model), alpha=0.35 if s == 0 else 0.9,
                   hatch=("", "//", "..", "xx")[j % 4], edgecolor="black", lw=0.4, label=f"{f}, {which} {p.k}")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(3), ["first", "middle", "last"])
    ax.set_xlabel("gold position")
    ax.legend(frameon=False, fontsize=6, ncol=2)
