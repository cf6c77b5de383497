"""Figures of the report, drawn by the controller from typed figure payloads.

A measure returns one payload (a dataclass below); each figure kind in ``DRAW`` names the
payload type it draws, and the claims table is checked at import so that every claim's
figure kinds accept its measures' payloads. Payloads cross pytest-xdist and
``claims.json``'s side file as JSON (``to_json`` / ``payload_from_json``).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, NamedTuple

import matplotlib
import numpy as np

from .registry import Registry

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"rope": dict(color="tab:red", label="with RoPE"), "norope": dict(color="tab:blue", label="without RoPE")}
# one colour per model in every figure (known aliases fixed; another model by its name's checksum)
MODEL_COLOURS = {"smollm2": "tab:green", "gemma3": "tab:purple", "qwen": "tab:orange", "llama": "tab:brown",
                 "olmo": "tab:cyan", "mistral": "tab:olive", "phi": "tab:pink", "gpt-neox": "tab:gray"}
_SPARE = ("darkgoldenrod", "teal", "indigo", "firebrick", "slategray", "darkkhaki", "navy", "sienna")
TASK_LINES = ("-", "--", ":", "-.")


def model_colour(model: str) -> str:
    return MODEL_COLOURS.get(model) or _SPARE[zlib.crc32(model.encode()) % len(_SPARE)]


def _subjects(payloads, task: bool = True) -> str:
    """'smollm2 (nq), gemma3 (nq)': the models (and tasks) a figure shows, for its title."""
    seen = dict.fromkeys(f"{p.model} ({p.task})" if task and getattr(p, "task", None) else p.model
                         for p in payloads)
    return ", ".join(seen)


def _subplots(n: int = 1, width: float = 5.5, height: float = 3.6, cols: int = 4, **kw):
    """``n`` panels of ``width`` × ``height`` inches, ``cols`` a row at most, laid out so
    that labels never touch (constrained layout): the figure and its n axes, in order."""
    ncols = min(n, cols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained", **kw)
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


# ---------------------------------------------------------------- payloads

class Payload:
    def to_json(self) -> dict:
        return {"type": type(self).__name__, **asdict(self)}


@dataclass
class ToyCurves(Payload):
    """Fig. 1a/1b of one setup, averaged over seeds."""
    setup: str  # "rope" | "norope"
    q: list[float]  # mean |q| per dim, θ order
    k: list[float]
    removed: list[int]  # number of dims removed
    loss_first: list[float]  # loss with the first dims removed
    loss_last: list[float]
    seeds: list[int]
    init_std: float = 1.0  # the vectors' initialisation, N(0, init_std²)


@dataclass
class HeadProfile(Payload):
    """A per-dim quantity of every head in θ order: W_q row norms (Fig. 2a, 5) or utility (Fig. 2b, 6)."""
    model: str
    source: str  # "wq" | "wq_scaled" | "utility"
    curve: list[float]  # [Dh] mean over layers and heads
    heatmap: list[list[float]]  # [L·H, Dh]
    n_heads: int
    task: str | None = None


@dataclass
class Scatter(Payload):
    """One point a head (Fig. 3, Fig. 4)."""
    model: str
    task: str
    which: str  # "first" | "last"
    x: list[float]
    y: list[float]
    layer: list[int]
    labels: list[str]


@dataclass
class AccuracyByPosition(Payload):
    """Accuracy (%) by gold position under each mask (Tables 1-3 as lines)."""
    model: str
    task: str
    positions: list[int]  # 1-based
    accuracy: dict[str, list[float]]  # mask -> accuracy at each position
    n: int  # questions
    mode: str  # "fast" | "faithful"


PAYLOADS = {c.__name__: c for c in (ToyCurves, HeadProfile, Scatter, AccuracyByPosition)}


def payload_from_json(d: dict | None) -> Payload | None:
    if d is None:
        return None
    cls = PAYLOADS[d["type"]]
    return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


class Figure(NamedTuple):
    payload: type  # what it draws
    draw: Callable[[list], plt.Figure]  # payloads -> figure


DRAW: Registry = Registry("figure kind")


def figure(payload: type):
    def register(fn):
        DRAW.register(fn.__name__, Figure(payload, fn))
        return fn
    return register


def draw(kind: str, payloads: list[Payload], path: Path) -> Path:
    fig = DRAW[kind].draw(payloads)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _first_per(payloads, key):
    """One payload per distinct ``key(payload)``, the first one met."""
    out = {}
    for p in payloads:
        out.setdefault(key(p), p)
    return out


@figure(ToyCurves)
def fig1a(payloads):
    """Fig. 1a: mean |q| and |k| per dimension (θ order), with and without RoPE."""
    fig, axes = _subplots(2, 5, 3.4, sharey=True)
    for setup, f in _first_per(payloads, lambda p: p.setup).items():
        for ax, role in zip(axes, ("q", "k")):
            ax.plot(getattr(f, role), lw=1.2, **STYLE[setup])
    for ax, role in zip(axes, ("query", "key")):
        ax.set_title(f"{role} vectors")
        ax.set_xlabel("dimension (θ order, highest frequency first)")
    axes[0].set_ylabel("mean |value| over tuples")
    axes[0].legend(frameon=False)
    fig.suptitle("Fig. 1a: average magnitude per dimension (toy)")
    return fig


@figure(ToyCurves)
def fig1b(payloads):
    """Fig. 1b: loss against the number of removed dims, first vs last."""
    fig, (ax,) = _subplots()
    for setup, f in _first_per(payloads, lambda p: p.setup).items():
        st = STYLE[setup]
        ax.plot(f.removed, f.loss_first, color=st["color"], ls="-", marker=".",
                label=f"{st['label']}: first dims removed")
        ax.plot(f.removed, f.loss_last, color=st["color"], ls="--", marker=".",
                label=f"{st['label']}: last dims removed")
    ax.set_xlabel("# removed dimensions")
    ax.set_ylabel("loss (Eq. 3), nats")
    ax.set_title("Fig. 1b: removing dimensions (toy)")
    ax.legend(frameon=False, fontsize=8)
    return fig


def _wq_panels(payloads):
    """{(model, scaled): payload}, the raw (unscaled) profile first."""
    ordered = sorted(payloads, key=lambda p: p.source == "wq_scaled")
    return _first_per(ordered, lambda p: (p.model, p.source == "wq_scaled"))


@figure(HeadProfile)
def fig2a(payloads):
    """Fig. 2a: average L1 norm of W_q rows per dimension (θ order), one line per model."""
    fig, (ax,) = _subplots(1, 6)
    for (model, scaled), f in _wq_panels(payloads).items():
        ax.plot(f.curve, lw=1.3, ls="--" if scaled else "-", color=model_colour(model),
                label=f"{model}" + (" (× |q_norm|)" if scaled else ""))
    ax.set_xlabel("dimension (θ order, highest frequency first)")
    ax.set_ylabel("mean L1 norm of W_q row")
    ax.set_title(f"Fig. 2a: W_q row norms, {_subjects(payloads, task=False)}")
    ax.legend(frameon=False, fontsize=8)
    return fig


def _heatmaps(panels: dict, title: str, label: str, **imshow) -> plt.Figure:
    """One layer × head by dimension heatmap per panel ({title: figure data})."""
    fig, axes = _subplots(len(panels), 5.2, 5.2)
    for ax, (name, (h, n_heads)) in zip(axes, panels.items()):
        im = ax.imshow(h, aspect="auto", interpolation="nearest", **imshow)
        ax.set_title(name)
        ax.set_xlabel("dimension (θ order)")
        ax.set_ylabel(f"layer × head ({n_heads} heads a layer)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
    fig.suptitle(title)
    return fig


@figure(HeadProfile)
def fig5(payloads):
    """Fig. 5: every head's W_q row norms, each head relative to its own mean."""
    panels = {}
    for (model, scaled), f in _wq_panels(payloads).items():
        if not scaled:
            h = np.asarray(f.heatmap)
            panels[model] = (h / h.mean(1, keepdims=True), f.n_heads)
    lo, hi = np.percentile(np.concatenate([h.ravel() for h, _ in panels.values()]), [1, 99])
    return _heatmaps(panels, f"Fig. 5: L1 norm of W_q rows, every head ({', '.join(panels)})", "row L1 / head mean",
                     cmap="viridis", vmin=lo, vmax=hi)


@figure(HeadProfile)
def fig2b(payloads):
    """Fig. 2b: average utility score per dimension (θ order)."""
    fig, (ax,) = _subplots(1, 6)
    tasks = sorted({str(p.task) for p in payloads})
    for (model, task), f in _first_per(payloads, lambda p: (p.model, p.task)).items():
        ax.plot(f.curve, lw=1.3, color=model_colour(model), ls=TASK_LINES[tasks.index(str(task)) % len(TASK_LINES)],
                label=f"{model} ({task})")
    ax.set_xlabel("dimension (θ order, highest frequency first)")
    ax.set_ylabel("mean utility u")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Fig. 2b: utility scores, {_subjects(payloads)}")
    ax.legend(frameon=False, fontsize=8)
    return fig


@figure(HeadProfile)
def fig6(payloads):
    """Fig. 6: every head's utility scores (rows: layer × head, columns: θ order)."""
    panels = {f"{m} ({t})": (np.asarray(f.heatmap), f.n_heads)
              for (m, t), f in _first_per(payloads, lambda p: (p.model, p.task)).items()}
    return _heatmaps(panels, f"Fig. 6: utility scores, every head ({', '.join(panels)})", "u", cmap="magma", vmin=0, vmax=1)


def _scatter(payloads, title):
    panels = _first_per(payloads, lambda f: (f.model, f.task, f.which))
    keys = sorted(panels, key=lambda k: (k[0], k[1], k[2] != "first"))
    fig, axes = _subplots(len(keys), 4.2, 3.8)  # first | last of a subject side by side
    for ax, key in zip(axes, keys):
        f = panels[key]
        sc = ax.scatter(f.x, f.y, c=f.layer, cmap="viridis", s=12)
        rho = np.corrcoef(f.x, f.y)[0, 1] if len(f.x) > 2 else float("nan")
        ax.set_title(f"{key[0]} ({key[1]}), {key[2]} dims: ρ = {rho:.2f}", fontsize=9, color=model_colour(key[0]))
        ax.set_xlabel(f.labels[0])
        ax.set_ylabel(f.labels[1])
    fig.colorbar(sc, ax=axes, label="layer", fraction=0.02)
    fig.suptitle(f"{title}: {_subjects(panels[k] for k in keys)}")
    return fig


@figure(Scatter)
def fig3(payloads):
    """Fig. 3: retrieval score against the utility of the first/last dims, by layer."""
    return _scatter(payloads, "Fig. 3: retrieval score vs utility (one point a head)")


@figure(Scatter)
def fig4(payloads):
    """Fig. 4: W_q row L1 norm against the utility of the same dims."""
    return _scatter(payloads, "Fig. 4: W_q row L1 norm vs utility (one point a head)")


@figure(AccuracyByPosition)
def accuracy_by_position(payloads):
    """Accuracy by gold position under each mask variant (Tables 1-3 as lines)."""
    panels = _first_per(payloads, lambda f: (f.model, f.task))
    fig, axes = _subplots(len(panels), 4.6, 3.6)
    for ax, ((model, task), f) in zip(axes, panels.items()):
        for v, acc in f.accuracy.items():
            ax.plot(f.positions, acc, marker="o", lw=1.3, ls="-" if v == "none" else "--", label=v)
        ax.set_title(f"{model} ({task}, n = {f.n}, {f.mode} mode)", color=model_colour(model))
        ax.set_xlabel("gold document position")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_xticks(f.positions)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"Accuracy by gold position under each mask: {_subjects(panels.values())}")
    return fig
