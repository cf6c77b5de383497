"""Beyond the paper (issue 14, part 2): the critical dimension.

The paper's argument: a dim is of no use for long distances when its rotation period
2π/θ_i is shorter than the distances the task needs. Liu et al. (2023, "Scaling Laws of
RoPE-based Extrapolation") count the dims whose period fits in the training length T:
d_c = 2⌈(d/2)·log_b(T/2π)⌉ for base b (:func:`predicted`). If the argument holds, the toy's
per-dim magnitude (Fig. 1a) should rise where the θ order crosses d_c, and that place
should move with b and T as d_c does.

- Estimator (:func:`transition`): the least-squares change point of the magnitude curve
  over rotary pairs in θ order: the split s (whole pairs) minimising the squared error of
  a two-level step (mean before s, mean from s on); returned in coordinates (2s).
- Toy sweep: the profile's toy (``ropedim.toy``) with base b and maximum position T from
  a grid, RoPE only (the no-RoPE head has no b or T), seeded; each configuration trained
  once and cached. The default toy's own runs serve its grid point.
- Statistic: per seed, the slope of the measured transition against d_c over the grid
  (or the mean absolute error); replicates are seeds (t interval), as the toy's other checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import cache, stats, toy
from .figures import PAYLOADS, Payload, _subplots, figure, model_colour
from .measures import Measurement, NotApplicable, measure

__all__ = ["predicted", "transition", "CriticalDims", "grid_transitions", "critical_statistic",
           "critical_dimension", "layer_predictions", "llm_critical", "critical_wq", "critical_utility"]

CODE_VERSION = 2  # 2: re-measured cold for the CI cost (same computation as 1)


def predicted(dim: int, base: float, max_position: float) -> int:
    """Liu et al. (2023): d_c = 2⌈(d/2)·log_b(T/2π)⌉, the dims (θ order, highest frequency
    first) whose period 2π/θ fits in T; clamped to [0, d]."""
    if max_position <= 2 * math.pi:
        return 0
    return int(min(dim, max(0, 2 * math.ceil(dim / 2 * math.log(max_position / (2 * math.pi)) / math.log(base)))))


def transition(curve) -> int:
    """Where a per-dim curve (θ order, paper layout: pair r = coordinates 2r, 2r + 1) steps:
    the least-squares change point over pairs (a two-level step, the split between 1 and
    the number of pairs − 1), in coordinates."""
    x = np.asarray(curve, dtype=float)
    if x.ndim != 1 or len(x) < 4 or len(x) % 2:
        raise ValueError(f"need an even number (>= 4) of per-dim values, got shape {x.shape}")
    p = x.reshape(-1, 2).mean(1)
    n = len(p)
    c1, c2 = np.cumsum(p), np.cumsum(p * p)
    best, where = np.inf, 1
    for s in range(1, n):
        left = c2[s - 1] - c1[s - 1] ** 2 / s
        right = (c2[-1] - c2[s - 1]) - (c1[-1] - c1[s - 1]) ** 2 / (n - s)
        if left + right < best - 1e-12:
            best, where = left + right, s
    return 2 * where


def _curve(run) -> np.ndarray:
    """Mean |q|, |k| per dim of a trained toy, θ order."""
    return toy.magnitude(run).numpy().mean(0)


# ---------------------------------------------------------------- the toy sweep

def _config_of(runs: dict) -> toy.ToyConfig:
    """The profile's toy configuration that trained ``runs`` ({setup: [ToyRun]}), found by
    its size and initialisation among the profiles (the sweep varies only b and T)."""
    from .profiles import PROFILES
    r = next(rs[0] for rs in runs.values() if rs)
    for p in PROFILES.values():
        for cfg in p.toy_configs().values():
            if (cfg.n, cfg.dim, cfg.init_std) == (r.q.shape[0], r.q.shape[1], r.init_std):
                return cfg
    raise ValueError(f"no profile trains a toy of n={r.q.shape[0]}, dim={r.q.shape[1]}, init std {r.init_std}")


def _trained_rope(cfg: toy.ToyConfig, seeds) -> list:
    spec = {"config": cfg.to_dict(), "seeds": list(seeds), "code": toy.CODE_VERSION, "ropes": [True],
            "critical": CODE_VERSION}
    # compiling pays off over hundreds of steps only (the smoke profile's toy trains a few dozen)
    return cache.cached("toy", spec, lambda: toy.train(cfg, ropes=(True,), seeds=tuple(seeds),
                                                       compile=cfg.steps >= 500))


def grid_transitions(cfg: toy.ToyConfig, grid, seeds, given: dict | None = None) -> dict:
    """{(b, T): {"predicted": d_c, "measured": [per seed], "curve": mean magnitude, "seconds"}}
    over ``grid`` [(b, T)], RoPE heads of ``cfg`` with b and T replaced. ``given``:
    {(b, T): [ToyRun per seed]} already trained (the profile's own toy)."""
    out = {}
    for b, t in grid:
        c = replace(cfg, base=float(b), max_position=int(t))
        runs = (given or {}).get((float(b), int(t))) or _trained_rope(c, seeds)
        runs = [r for r in runs if r.seed in seeds]
        out[(b, t)] = _entry(c.dim, b, t, runs)
    return out


def _entry(dim, b, t, runs) -> dict:
    return {"predicted": predicted(dim, b, t), "measured": [transition(_curve(r)) for r in runs],
            "curve": np.mean([_curve(r) for r in runs], 0).tolist(), "seconds": float(sum(r.seconds for r in runs)),
            "seeds": [r.seed for r in runs], "final_train_loss": [float(r.train_loss[-1]) for r in runs]}


def untrained(entries: dict, max_loss: float | None) -> dict:
    """{(b, T): final training loss} of the cells whose toy did not learn the task: mean final
    training loss over seeds above ``max_loss`` (None: none excluded). Their magnitude curve
    is that of an untrained head, so where it steps says nothing of the dims the task needs."""
    if max_loss is None:
        return {}
    return {k: float(np.mean(e["final_train_loss"])) for k, e in entries.items()
            if e.get("final_train_loss") is not None and np.mean(e["final_train_loss"]) > max_loss}


def critical_statistic(entries: dict, statistic: str, dim: int, max_loss: float | None = None) -> stats.Estimate:
    """Per seed, over the grid's cells whose toy learnt the task (:func:`untrained`): the OLS
    slope of measured on predicted ("slope") or the mean absolute error as a share of the
    head ("mae": coordinates / d); t interval over seeds."""
    dropped = untrained(entries, max_loss)
    grid = entries
    entries = {k: e for k, e in entries.items() if k not in dropped}
    if len({e["predicted"] for e in entries.values()}) < 2:
        return stats.Estimate(float("nan"), float("nan"), float("nan"), n=0, unit="seeds", extra={
            "excluded": _excluded(dropped, grid)}, precondition=(
            f"{len(dropped)} of {len(grid)} grid cells have a toy that did not learn the task (final training "
            f"loss above {max_loss:.2f} nats): fewer than two predictions are left to compare"))
    keys = list(entries)
    pred = np.array([entries[k]["predicted"] for k in keys], float)
    meas = np.array([entries[k]["measured"] for k in keys], float)  # [grid, seeds]
    if meas.shape[1] < 2:
        raise ValueError("need at least two seeds for an interval")
    if np.ptp(pred) == 0:
        raise ValueError("the grid's predictions are all equal: no slope to measure")
    slopes, intercepts = zip(*(np.polyfit(pred, meas[:, s], 1) for s in range(meas.shape[1])))
    mae = np.abs(meas - pred[:, None]).mean(0) / dim
    per_seed = {"slope": np.array(slopes), "mae": mae}[statistic]
    est = stats.t_interval(per_seed)
    est.unit = "seeds"
    si, ii, mi = stats.t_interval(np.array(slopes)), stats.t_interval(np.array(intercepts)), stats.t_interval(mae)
    est.extra = {"per_seed": per_seed.tolist(), "slope": [si.value, si.low, si.high],
                 "intercept": [ii.value, ii.low, ii.high], "mae": [mi.value, mi.low, mi.high],
                 "grid": [{"base": k[0], "max_position": k[1], "predicted": entries[k]["predicted"],
                           "measured": entries[k]["measured"], "seeds": entries[k]["seeds"],
                           "final_train_loss": entries[k].get("final_train_loss")} for k in keys],
                 "excluded": _excluded(dropped, grid), "max_final_loss": max_loss}
    return est


def _excluded(dropped: dict, grid: dict) -> list[dict]:
    return [{"base": k[0], "max_position": k[1], "predicted": grid[k]["predicted"],
             "measured": grid[k]["measured"], "final_train_loss": round(v, 3),
             "why": "the toy did not learn the task: its curve is an untrained head's"} for k, v in dropped.items()]


@dataclass
class CriticalDims(Payload):
    """Measured transition against Liu et al.'s d_c over a grid of (b, T); the curves."""
    subject: str  # "toy (rope)" or a model
    dim: int
    labels: list[str]  # "b=1e4, T=2048"
    predicted: list[int]
    measured: list[list[int]]  # [grid][seed] (an LLM: [group][one value])
    curves: list[list[float]]  # [grid][dim] mean magnitude (an LLM: the averaged curve)
    notes: list[str] = field(default_factory=list)  # per cell: e.g. the final training loss
    left_out: list[bool] = field(default_factory=list)  # per cell: not counted (its toy did not learn the task)


PAYLOADS["CriticalDims"] = CriticalDims


@figure(CriticalDims)
def critical_fig(payloads):
    """First panel: measured transition against d_c, every cell of every subject (toy cells:
    bars over seeds; y = x dotted). Then each cell's curve, scaled to its own range, with
    d_c dashed and the measured transition solid."""
    first = {}
    for p in payloads:
        first.setdefault(p.subject, p)  # the first payload of each subject, the toy first
    subjects = sorted(first.values(), key=lambda p: (not p.subject.startswith("toy"), p.subject))
    cells = [(f, i) for f in subjects for i in range(len(f.labels))]
    fig, axes = _subplots(1 + len(cells), 3.6, 3.2, cols=4)
    ax = axes[0]
    markers = "osD^v<>"
    for j, f in enumerate(subjects):
        m = [np.asarray(x, float) for x in f.measured]
        mean = np.array([x.mean() for x in m])
        err = [mean - [x.min() for x in m], [x.max() for x in m] - mean]
        colour = "tab:red" if f.subject.startswith("toy") else model_colour(f.subject.split(" ")[0])
        out = np.array(f.left_out or [False] * len(m), bool)  # untrained cells
        for sel, face, label in ((~out, colour, f.subject), (out, "none", f"{f.subject}: untrained, left out")):
            if sel.any():
                ax.errorbar(np.asarray(f.predicted)[sel] / f.dim, mean[sel] / f.dim,
                            yerr=np.asarray(err)[:, sel] / f.dim, fmt=markers[j % 7], capsize=3, color=colour,
                            mfc=face, label=label, alpha=0.85)
    ax.plot([0, 1], [0, 1], color="black", lw=0.7, ls=":")
    ax.set_xlabel("d_c / d (Liu et al.: 2⌈(d/2)·log_b(T/2π)⌉)")
    ax.set_ylabel("measured transition / d")
    ax.set_title("transition vs d_c (dotted: equal)", fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    for a, (f, i) in zip(axes[1:], cells):
        c = np.asarray(f.curves[i])
        a.plot((c - c.min()) / (np.ptp(c) or 1), lw=1.1,
               color="tab:red" if f.subject.startswith("toy") else model_colour(f.subject.split(" ")[0]))
        a.axvline(f.predicted[i] - 0.5, color="black", ls="--", lw=0.8, label="d_c")
        a.axvline(float(np.mean(f.measured[i])) - 0.5, color="tab:blue", lw=1.0, label="measured")
        note = f"\n{f.notes[i]}" if f.notes and f.notes[i] else ""
        a.set_title(f"{f.subject}: {f.labels[i]}{note}", fontsize=8)
        a.set_xlabel("dimension (θ order)", fontsize=8)
    if cells:
        axes[1].legend(frameon=False, fontsize=7)
    fig.suptitle("Critical dimension: where the per-dim curve rises, against Liu et al.'s d_c")
    return fig


def _label(b, t) -> str:
    return f"b={b:g}, T={t}"


@measure(CriticalDims)
def critical_dimension(runs: dict, *, grid: tuple, n_seeds: int, init: str, statistic: str, setup: str = "rope",
                       trained_below: float | None = 0.5, seed: int = 0):
    """Beyond the paper: the toy's magnitude transition (:func:`transition`) against Liu et
    al.'s d_c over a grid of bases and maximum positions; per seed, the slope of measured
    on predicted (or the mean absolute error); t interval over seeds. Cells whose toy did
    not learn the task (mean final training loss above ``trained_below`` × chance, log n;
    None: every cell counts) are shown and left out of the statistic. ``runs``: the toy
    fixture's {init: {setup: [ToyRun]}}; its own (b, T) is reused, the rest trained (RoPE
    only) with the same configuration, over the profile's first ``n_seeds`` seeds.
    ``setup="norope"`` (the control): the no-RoPE heads, which neither b nor T enters (their
    training is the same computation at every grid cell), so the toy's own serve every cell."""
    if init not in runs:
        raise NotApplicable(f"this profile trains the toy with initialisation {', '.join(runs)} only, not {init}")
    cfg = _config_of(runs[init])
    seeds = sorted(r.seed for r in runs[init][setup])[:n_seeds]
    own = [r for r in runs[init][setup] if r.seed in seeds]
    if setup not in ("rope", "norope"):
        raise ValueError(f"setup must be 'rope' or 'norope', got {setup!r}")
    if all(r.rope for r in own):
        entries = grid_transitions(cfg, grid, seeds, {(float(cfg.base), int(cfg.max_position)): own})
    else:  # heads without RoPE (whatever the setup is called: the controls swap them in) serve every cell
        entries = {(b, t): _entry(cfg.dim, b, t, own) for b, t in grid}
    max_loss = None if trained_below is None else trained_below * math.log(cfg.n)
    dropped = untrained(entries, max_loss)
    est = critical_statistic(entries, statistic, cfg.dim, max_loss)
    est.extra.update(toy_config={k: v for k, v in cfg.to_dict().items() if k not in ("base", "max_position")},
                     training_seconds=sum(e["seconds"] for e in entries.values()), seeds=seeds,
                     estimator="least-squares change point of mean |q|,|k| per rotary pair (two-level step)")
    fig = CriticalDims(f"toy ({setup})", cfg.dim, [_label(*k) for k in entries], [e["predicted"] for e in entries.values()],
                       [e["measured"] for e in entries.values()], [e["curve"] for e in entries.values()],
                       [f"final loss {np.mean(e['final_train_loss']):.2f} nats"
                        + (" (untrained: left out)" if k in dropped else "") for k, e in entries.items()],
                       [k in dropped for k in entries])
    return Measurement(est, fig)


# ---------------------------------------------------------------- an LLM's averaged curves

SPANS = ("window", "context")


def layer_spans(anatomy, context: int, span: str = "window") -> np.ndarray:
    """The longest distance each layer [L] sees in training: the context, or (``span="window"``)
    a sliding-window layer's window where it is shorter (Gemma 3's local layers attend over
    512 tokens of a 32768 context: Liu et al.'s T for them is the window)."""
    if span not in SPANS:
        raise ValueError(f"span must be one of {SPANS}, got {span!r}")
    windows = getattr(anatomy, "sliding_window", None) or [None] * anatomy.theta.shape[0]
    return np.array([min(context, w) if span == "window" and w else context for w in windows])


def layer_predictions(anatomy, context: int, span: str = "window") -> np.ndarray:
    """d_c of each layer [L] from the θ it uses (Liu et al.'s count: the pairs whose period
    2π/θ is shorter than the layer's span T, in coordinates); for LLaMA's θ = b^(-2i/d) it is
    :func:`predicted`; Gemma 3's local and global layers get their own θ and T."""
    periods = 2 * math.pi / anatomy.theta.double()  # [L, pairs]
    spans = torch.as_tensor(layer_spans(anatomy, context, span), dtype=torch.float64)[:, None]
    return (2 * (periods < spans).sum(-1)).numpy()


def llm_critical(values: torch.Tensor, anatomy, context: int, subject: str, seed: int = 0, span: str = "window"):
    """(estimate, payload): (transition − d_c) / d of a per-dim quantity [L, H, Dh]
    averaged over the layers and heads of each group of layers sharing one d_c, weighted by
    the group's layers; interval from a bootstrap over layers (as the C5a/C5b trends)."""
    from .weights import to_paper_order
    paper = to_paper_order(values, anatomy.rank).double().numpy()  # [L, H, Dh]
    pred = layer_predictions(anatomy, context, span)
    spans = layer_spans(anatomy, context, span)
    groups = sorted(set(pred.tolist()))
    d = anatomy.head_dim

    def stat(idx):
        err, n = 0.0, 0
        for g in groups:
            sel = idx[pred[idx] == g]
            if len(sel):
                err, n = err + len(sel) * (transition(paper[sel].mean((0, 1))) - g) / d, n + len(sel)
        return err / n

    est = stats.cluster_bootstrap(paper.shape[0], stat, seed=seed)
    est.unit = "layers"
    curves = [paper[pred == g].mean((0, 1)) for g in groups]
    measured = [transition(c) for c in curves]
    rises = [bool(c[m:].mean() > c[:m].mean()) for c, m in zip(curves, measured)]
    t_of = {g: sorted({int(t) for t in spans[pred == g]}) for g in groups}
    est.extra = {"context": context, "head_dim": d, "span": span, "groups": [
        {"predicted": int(g), "measured": int(m), "layers": int((pred == g).sum()), "T": t_of[g], "rises": r}
        for g, m, r in zip(groups, measured, rises)],
        "estimator": "least-squares change point of the curve averaged over the group's layers and heads"}
    if not all(rises):
        est.precondition = ("the averaged curve falls at its change point (d_c = " + ", ".join(
            str(int(g)) for g, r in zip(groups, rises) if not r) + "): it does not rise, so where it rises is not "
            "defined here")
    fig = CriticalDims(subject, d, [f"d_c = {g} (T = {'/'.join(map(str, t_of[g]))})" for g in groups],
                       [int(g) for g in groups],
                       [[m] for m in measured], [c.tolist() for c in curves],
                       [f"{int((pred == g).sum())} layers" for g in groups])
    return est, fig


def _context(loaded) -> int:
    """The training context: the model's config (``max_position_embeddings``; a GGUF's
    context_length), recorded with each row."""
    t = getattr(loaded.model.config, "max_position_embeddings", None)
    if not t:
        raise NotApplicable(f"{loaded.name}: no max_position_embeddings in its config: no training length for d_c")
    return int(t)


_SOURCE = {"window": "the model's config: max_position_embeddings, a sliding-window layer's window where shorter",
           "context": "the model's config: max_position_embeddings, for every layer"}


@measure(CriticalDims)
def critical_wq(loaded, *, scaled: bool, seed: int = 0, span: str = "window"):
    """Beyond the paper: where the W_q row L1 norm curve (averaged over layers and heads, θ
    order) rises, against d_c from each layer's θ and the model's training context:
    (transition − d_c) / head dim; bootstrap over layers."""
    from .weights import wq_norms
    w = wq_norms(loaded.model, loaded.anatomy)
    if scaled and w.scaled_storage is None:
        raise NotApplicable(f"{loaded.name} has no q_norm before RoPE: the scaled check is the raw one")
    est, fig = llm_critical(w.scaled_storage if scaled else w.storage, loaded.anatomy, _context(loaded),
                            f"{loaded.name} W_q", seed, span)
    est.extra["context_source"] = _SOURCE[span]
    return Measurement(est, fig)


@measure(CriticalDims)
def critical_utility(qa, *, reading: str, seed: int = 0, span: str = "window"):
    """Beyond the paper: where the utility curve (Eq. 4, averaged over layers and heads, θ
    order) rises, against d_c: (transition − d_c) / head dim; bootstrap over layers."""
    est, fig = llm_critical(qa.head_scores(reading).utility, qa.loaded.anatomy, _context(qa.loaded),
                            f"{qa.loaded.name} utility ({qa.cfg.task})", seed, span)
    est.extra["context_source"] = _SOURCE[span]
    return Measurement(est, fig)
