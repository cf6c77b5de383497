"""Beyond the paper (issue 19, §3 and §4): the measures, payloads and figures of RoPE's
frequency use seen in activations (``B-act``) and of massive query values (``B-massive``).
Registered in ``ropedim.measures.MEASURES`` and ``ropedim.figures.DRAW`` on import
(``ropedim.measures`` imports this module once, at its end).

Statistics (``ropedim.stats``, reused): the C5a statistic on the head-averaged curve of
pair norms (``_theta_trend``: Spearman with θ rank, a bootstrap over layers, the null's
99th percentile for that number of pairs); shares and contrasts over heads with a
bootstrap over layers; the §4b ablation paired per question (gold positions averaged
within a question), a bootstrap over questions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import figures as F
from . import stats
from .activations import pair_rank, replace_query_dims
from .figures import HeadProfile, Payload, figure, model_colour
from .measures import Measurement, _theta_trend, measure
from .weights import to_paper_order

__all__ = ["ActProfile", "MassiveDims"]


# ---------------------------------------------------------------- payloads

@dataclass
class ActProfile(HeadProfile):
    """Mean pair norm of every head in θ order (columns: rotary pairs, highest frequency
    first), with each head's attention mass on the same and previous token and the share of
    its query norm in the highest-frequency pairs (the local-head control)."""
    role: str = "query"  # "query" | "key"
    local: list = field(default_factory=list)  # [L·H] attention mass on tokens t and t − 1 (query heads)
    high_share: list = field(default_factory=list)  # [L·H] query norm share of the highest-frequency pairs
    fraction: float = 0.125
    local_threshold: float = 0.5


@dataclass
class MassiveDims(Payload):
    """Per head, the θ rank of the pair holding its largest query dim (mean |q| over tokens);
    and, for the ablation, the gold log-prob under each replacement."""
    model: str
    task: str
    n_pairs: int
    massive_rank: list  # [L·H] pair rank (0 = highest frequency) of each head's massive dim
    layer: list  # [L·H]
    logprob: dict = field(default_factory=dict)  # intervention -> mean gold log-prob per gold position


for _cls in (ActProfile, MassiveDims):
    F.PAYLOADS[_cls.__name__] = _cls


# ---------------------------------------------------------------- helpers

def _paper_pairs(x: torch.Tensor, anatomy) -> torch.Tensor:
    """[L, H, P] per pair in storage order -> θ order (highest frequency first)."""
    return to_paper_order(x, pair_rank(anatomy))


def _high_share(q_paper: torch.Tensor, fraction: float) -> tuple[torch.Tensor, int]:
    """Share of a head's summed pair norm in its highest-frequency ``fraction`` of pairs [L, H]."""
    n = max(1, round(q_paper.shape[-1] * fraction))
    return q_paper[..., :n].sum(-1) / q_paper.sum(-1), n


def _act_profile(qa, role: str, fraction: float = 0.125, local_threshold: float = 0.5) -> ActProfile:
    st, a = qa.activation_stats(), qa.loaded.anatomy
    values = (st.q_pair if role == "query" else st.k_pair).mean(0)
    paper = _paper_pairs(values, a)
    q_paper = _paper_pairs(st.q_pair.mean(0), a)
    hs, _ = _high_share(q_paper, fraction)
    return ActProfile(qa.loaded.name, f"act_{role}", paper.mean((0, 1)).tolist(),
                      np.round(paper.flatten(0, 1).numpy(), 4).tolist(), int(values.shape[1]), qa.cfg.task, role,
                      np.round(st.local.mean(0).flatten().numpy(), 4).tolist(),
                      np.round(hs.flatten().numpy(), 4).tolist(), fraction, local_threshold)


def _describe(st) -> dict:
    return {"examples": st.n_examples, "tokens_mean": float(np.mean(st.tokens)), "tokens": st.tokens_rule}


# ---------------------------------------------------------------- §3: frequency use in activations

@measure(ActProfile)
def act_pair_trend(qa, *, role: str, seed: int = 0):
    """B-act: the C5a statistic on activations: per head and rotary pair, the mean norm of
    the pre-RoPE query (or key) pair over the analysis prompts' tokens; the curve averaged
    over layers and heads in θ order, its Spearman correlation with θ rank; a bootstrap
    over layers; the bar: the null's 99th percentile for this number of pairs."""
    if role not in ("query", "key"):
        raise ValueError(f"role must be 'query' or 'key', got {role!r}")
    st, a = qa.activation_stats(), qa.loaded.anatomy
    values = (st.q_pair if role == "query" else st.k_pair).mean(0)  # [L, H or KVH, P]
    est = _theta_trend(values, pair_rank(a), seed)
    est.extra.update(_describe(st), pairs=a.n_pairs, role=role,
                     note="pairs, not single dims: the null is that of the number of pairs")
    return Measurement(est, _act_profile(qa, role))


@measure(ActProfile)
def act_local_contrast(qa, *, fraction: float, local_threshold: float, min_heads: int, seed: int = 0):
    """B-act control (Barbero et al.): heads whose attention is mostly on the same or the
    previous token (mass > ``local_threshold``) put a larger share of their query norm in
    the highest-frequency ``fraction`` of pairs than the other heads: the mean share of
    the local heads minus that of the others; a bootstrap over layers."""
    st, a = qa.activation_stats(), qa.loaded.anatomy
    hs, n = _high_share(_paper_pairs(st.q_pair.mean(0), a), fraction)
    hs, local = hs.double().numpy(), st.local.mean(0).double().numpy()  # [L, H]
    is_local = local > local_threshold

    def contrast(idx):
        h, m = hs[idx].ravel(), is_local[idx].ravel()
        return float(h[m].mean() - h[~m].mean()) if m.any() and (~m).any() else float("nan")

    est = stats.cluster_bootstrap(hs.shape[0], contrast, seed=seed)
    est.unit = "layers"
    k = int(is_local.sum())
    est.extra = {**_describe(st), "local_heads": k, "other_heads": int((~is_local).sum()),
                 "local_heads_by_layer": is_local.sum(1).tolist(), "pairs_in_high_band": n,
                 "high_share_local": float(hs[is_local].mean()) if k else None,
                 "high_share_other": float(hs[~is_local].mean()) if (~is_local).any() else None}
    if k < min_heads:
        est.precondition = (f"only {k} heads put more than {local_threshold:g} of their attention on the same or "
                            f"previous token (< {min_heads}): too few local heads to contrast")
    return Measurement(est, _act_profile(qa, "query", fraction, local_threshold))


# ---------------------------------------------------------------- §4: massive values

def _massive(qa):
    """(stats, per-head massive dim [L, H] (storage), its pair rank [L, H])."""
    st, a = qa.activation_stats(), qa.loaded.anatomy
    dims = st.q_abs.mean(0).argmax(-1)  # [L, H]
    return st, dims, torch.gather(a.rank, 1, dims)


def _massive_payload(qa, rank: torch.Tensor, logprob: dict | None = None) -> MassiveDims:
    a = qa.loaded.anatomy
    return MassiveDims(qa.loaded.name, qa.cfg.task, a.n_pairs, rank.flatten().tolist(),
                       np.repeat(np.arange(a.n_layers), a.n_heads).tolist(), logprob or {})


@measure(MassiveDims)
def massive_low_freq_share(qa, *, seed: int = 0):
    """B-massive (a), Jin et al.: per head, the query dim with the largest mean |value| over
    tokens (before RoPE); the share of heads where it lies in the lower-frequency half of
    the pairs by θ rank (dims outside the rotary part count as the lowest frequencies:
    θ = 0); a bootstrap over layers."""
    st, dims, rank = _massive(qa)
    P = qa.loaded.anatomy.n_pairs
    low = (rank >= P // 2).double().numpy()
    const = st.q_mean.abs() / st.q_abs.mean(0).clamp_min(1e-12)
    est = stats.cluster_bootstrap(low.shape[0], lambda idx: float(low[idx].mean()), seed=seed)
    est.unit = "layers"
    # Jin et al. rank dims by their L2 norm over tokens; mean |q| is ours: how often the two pick the same
    est.extra = {**_describe(st), "heads": int(low.size), "pairs": P,
                 "pair_rank_histogram": np.bincount(rank.flatten().numpy(), minlength=P).tolist(),
                 "massive_to_median_dim": float((st.q_abs.mean(0).max(-1).values /
                                                 st.q_abs.mean(0).median(-1).values).median()),
                 # |mean q| / mean |q|: 1 when a dim keeps one sign over tokens (a constant offset)
                 "sign_constancy_massive": float(torch.gather(const, -1, dims[..., None]).median()),
                 "sign_constancy_all_dims": float(const.median())}
    return Measurement(est, _massive_payload(qa, rank))


@measure(MassiveDims)
def massive_ablation(qa, *, draws: int, questions: int | None, seed: int = 0):
    """B-massive (b), Jin et al.'s ablation on the gold log-prob: in every head, the massive
    query dim replaced by its mean over the analysis tokens, against one random other dim
    of the same head replaced the same way (``draws`` seeded draws, averaged), on the first
    ``questions`` kept questions (None: all) at every gold position; the difference log p(gold | massive replaced) − log p(gold | random replaced), the gold
    positions of a question averaged, a bootstrap over questions. Below 0: the massive dim
    matters more."""
    st, dims, rank = _massive(qa)
    a = qa.loaded.anatomy
    mean = st.q_mean  # [L, H, Dh]
    g = torch.Generator().manual_seed(seed)
    ivs = [replace_query_dims("massive-mean", dims, torch.gather(mean, -1, dims[..., None])[..., 0])]
    for d in range(draws):
        other = torch.randint(0, a.head_dim - 1, dims.shape, generator=g)
        other = other + (other >= dims).long()  # uniform over the head's other dims
        ivs.append(replace_query_dims(f"random-mean-{d}", other, torch.gather(mean, -1, other[..., None])[..., 0]))
    lp = qa.gold_logprob(ivs, qa.cfg.beyond_questions(questions))  # name -> [positions, questions]
    rand = np.mean([lp[f"random-mean-{d}"] for d in range(draws)], axis=0)
    per_q = (lp["massive-mean"] - rand).mean(0)  # [questions]
    est = stats.mean_ci(per_q, seed=seed)
    est.unit = "questions"
    est.p_value = float(stats.sps.wilcoxon(per_q).pvalue) if np.any(per_q != 0) else 1.0
    est.extra = {"draws": draws, "questions": int(per_q.size), "positions": int(lp["none"].shape[0]),
                 "massive_minus_none": float((lp["massive-mean"] - lp["none"]).mean()),
                 "random_minus_none": float((rand - lp["none"]).mean()),
                 "form": "mean replacement (Jin et al.), pre-RoPE query, every head, every position",
                 "mean_over": st.tokens_rule + f", {st.n_examples} analysis examples"}
    logprob = {k: v.mean(1).tolist() for k, v in lp.items()}
    return Measurement(est, _massive_payload(qa, rank, logprob))


# ---------------------------------------------------------------- figures

def _act_panels(payloads, role=None):
    return F._first_per([p for p in payloads if role is None or p.role == role], lambda p: (p.model, p.task, p.role))


@figure(ActProfile)
def act_heatmap(payloads):
    """Barbero et al.'s Fig.: mean pair norm of the pre-RoPE query and key, every head
    (rows: layer × head), columns: rotary pairs in θ order; each head relative to its mean."""
    panels = {}
    for (model, task, role), f in sorted(_act_panels(payloads).items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                      kv[0][2] != "query")):
        h = np.asarray(f.heatmap)
        panels[f"{model} ({task}): {role}"] = (h / h.mean(1, keepdims=True), f.n_heads)
    lo, hi = np.percentile(np.concatenate([h.ravel() for h, _ in panels.values()]), [1, 99])
    fig = F._heatmaps(panels, "Mean pair norm over tokens, every head (beyond the paper; Barbero et al.)",
                      "pair norm / head mean", cmap="viridis", vmin=lo, vmax=hi)
    for ax in (ax for ax in fig.axes if ax.get_ylabel().startswith("layer")):
        ax.set_xlabel("rotary pair (θ order, highest frequency first)")
    return fig


@figure(ActProfile)
def act_profile(payloads):
    """The head-averaged pair-norm curve against θ rank (query and key), and the control:
    each head's attention on the same/previous token against its norm share in the
    highest-frequency pairs."""
    fig, (ax, bx) = F._subplots(2, 5.5, 3.8)
    for (model, task, role), f in _act_panels(payloads).items():
        ax.plot(f.curve, lw=1.3, color=model_colour(model), ls="-" if role == "query" else "--",
                label=f"{model} ({task}), {role}")
    ax.set_xlabel("rotary pair (θ order, highest frequency first)")
    ax.set_ylabel("mean pair norm over tokens")
    ax.set_title("head-averaged pair norm (the C5a curve, on activations)", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    for (model, task, _), f in _act_panels(payloads, "query").items():
        loc, hs = np.asarray(f.local), np.asarray(f.high_share)
        if loc.size:
            bx.scatter(loc, hs, s=10, color=model_colour(model), alpha=0.7, label=f"{model} ({task})")
            bx.axvline(f.local_threshold, color="gray", lw=0.8, ls=":")
            bx.set_xlabel("attention mass on the same and previous token")
            bx.set_ylabel(f"query norm share of the top {f.fraction:g} of pairs by θ", fontsize=9)
    bx.set_title("control: local heads use the high frequencies", fontsize=9)
    bx.legend(frameon=False, fontsize=8)
    fig.suptitle(f"Frequency use in activations: {F._subjects(payloads)}")
    return fig


@figure(MassiveDims)
def massive_dims(payloads):
    """Where each head's massive query dim lies (θ rank of its pair), and the ablation's
    gold log-prob by gold position."""
    panels = F._first_per(payloads, lambda p: (p.model, p.task))
    ablations = [p for p in payloads if p.logprob]
    fig, axes = F._subplots(2 if ablations else 1, 5.5, 3.6)
    for (model, task), f in panels.items():
        counts = np.bincount(f.massive_rank, minlength=f.n_pairs)
        axes[0].bar(np.arange(len(counts)), counts, color=model_colour(model), alpha=0.7, label=f"{model} ({task})")
        axes[0].axvline(f.n_pairs / 2 - 0.5, color="gray", lw=0.8, ls=":")
    axes[0].set_xlabel("θ rank of the pair holding the head's largest query dim")
    axes[0].set_ylabel("heads")
    axes[0].set_title("massive query dims (Jin et al.): lower-frequency half right of the line", fontsize=9)
    axes[0].legend(frameon=False, fontsize=8)
    if ablations:
        f = F._first_per(ablations, lambda p: (p.model, p.task))
        for (model, task), p in f.items():
            for name, vals in p.logprob.items():
                axes[1].plot(range(1, len(vals) + 1), vals, marker="o", label=f"{model} ({task}): {name}")
        axes[1].set_xticks([1, 2, 3], ["first", "middle", "last"])
        axes[1].set_xlabel("gold position")
        axes[1].set_ylabel("mean gold log-prob")
        axes[1].set_title("one query dim per head replaced by its mean", fontsize=9)
        axes[1].legend(frameon=False, fontsize=7)
    fig.suptitle(f"Massive values: {F._subjects(panels.values())}")
    return fig
