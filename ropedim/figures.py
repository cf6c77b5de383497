"""Figures of the report, drawn by the controller from the records' figure data."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"rope": dict(color="tab:red", label="with RoPE"), "norope": dict(color="tab:blue", label="without RoPE")}
DRAW = {}


def figure(fn):
    DRAW[fn.__name__] = fn
    return fn


def draw(kind: str, records: list[dict], path: Path) -> Path:
    fig = DRAW[kind](records)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _by_setup(records):
    return {r["figure"]["setup"]: r["figure"] for r in records if r.get("figure")}


@figure
def fig1a(records):
    """Fig. 1a: mean |q| and |k| per dimension (θ order), with and without RoPE."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for setup, f in _by_setup(records).items():
        for ax, role in zip(axes, ("q", "k")):
            ax.plot(f[role], lw=1.2, **STYLE[setup])
    for ax, role in zip(axes, ("query", "key")):
        ax.set_title(f"{role} vectors")
        ax.set_xlabel("dimension (θ order, highest frequency first)")
    axes[0].set_ylabel("mean |value| over tuples")
    axes[0].legend(frameon=False)
    fig.suptitle("Fig. 1a: average magnitude per dimension", y=1.03)
    return fig


@figure
def fig1b(records):
    """Fig. 1b: loss against the number of removed dims, first vs last."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for setup, f in _by_setup(records).items():
        st = STYLE[setup]
        ax.plot(f["removed"], f["loss_first"], color=st["color"], ls="-", marker=".",
                label=f"{st['label']}: first dims removed")
        ax.plot(f["removed"], f["loss_last"], color=st["color"], ls="--", marker=".",
                label=f"{st['label']}: last dims removed")
    ax.set_xlabel("# removed dimensions")
    ax.set_ylabel("loss (Eq. 3), nats")
    ax.set_title("Fig. 1b: removing dimensions")
    ax.legend(frameon=False, fontsize=8)
    return fig


def _per_model(records):
    """{model: figure data}, the raw (unscaled) variant first."""
    out = {}
    for r in sorted(records, key=lambda r: r["figure"].get("scaled", False)):
        out.setdefault((r["figure"]["model"], r["figure"].get("scaled", False)), r["figure"])
    return out


@figure
def fig2a(records):
    """Fig. 2a: average L1 norm of W_q rows per dimension (θ order), one line per model."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (model, scaled), f in _per_model(records).items():
        ax.plot(f["curve"], lw=1.3, ls="--" if scaled else "-",
                label=f"{model}" + (" (× |q_norm|)" if scaled else ""))
    ax.set_xlabel("dimension (θ order, highest frequency first)")
    ax.set_ylabel("mean L1 norm of W_q row")
    ax.set_title("Fig. 2a: W_q row norms")
    ax.legend(frameon=False, fontsize=8)
    return fig


def _heatmaps(panels: dict, title: str, label: str, **imshow) -> plt.Figure:
    """One layer × head by dimension heatmap per panel ({title: figure data})."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.2), squeeze=False)
    for ax, (name, (h, n_heads)) in zip(axes[0], panels.items()):
        im = ax.imshow(h, aspect="auto", interpolation="nearest", **imshow)
        ax.set_title(name)
        ax.set_xlabel("dimension (θ order)")
        ax.set_ylabel(f"layer × head ({n_heads} heads a layer)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@figure
def fig5(records):
    """Fig. 5: every head's W_q row norms, each head relative to its own mean."""
    panels = {}
    for (model, scaled), f in _per_model(records).items():
        if not scaled:
            h = np.asarray(f["heatmap"])
            panels[model] = (h / h.mean(1, keepdims=True), f["n_heads"])
    lo, hi = np.percentile(np.concatenate([h.ravel() for h, _ in panels.values()]), [1, 99])
    return _heatmaps(panels, "Fig. 5: L1 norm of W_q rows, every head", "row L1 / head mean",
                     cmap="viridis", vmin=lo, vmax=hi)


def _latest(records, key):
    """One figure payload per distinct ``key(figure)``."""
    out = {}
    for r in records:
        if r.get("figure"):
            out.setdefault(key(r["figure"]), r["figure"])
    return out


@figure
def fig2b(records):
    """Fig. 2b: average utility score per dimension (θ order)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (model, task), f in _latest(records, lambda f: (f["model"], f["task"])).items():
        ax.plot(f["curve"], lw=1.3, label=f"{model} ({task})")
    ax.set_xlabel("dimension (θ order, highest frequency first)")
    ax.set_ylabel("mean utility u")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Fig. 2b: utility scores")
    ax.legend(frameon=False, fontsize=8)
    return fig


@figure
def fig6(records):
    """Fig. 6: every head's utility scores (rows: layer × head, columns: θ order)."""
    panels = {f"{m} ({t})": (np.asarray(f["heatmap"]), f["n_heads"])
              for (m, t), f in _latest(records, lambda f: (f["model"], f["task"])).items()}
    return _heatmaps(panels, "Fig. 6: utility scores, every head", "u", cmap="magma", vmin=0, vmax=1)


def _scatter(records, title):
    panels = _latest(records, lambda f: (f["model"], f["task"], f["which"]))
    keys = sorted(panels, key=lambda k: (k[0], k[1], k[2] != "first"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        f = panels[key]
        sc = ax.scatter(f["x"], f["y"], c=f["layer"], cmap="viridis", s=12)
        rho = np.corrcoef(f["x"], f["y"])[0, 1] if len(f["x"]) > 2 else float("nan")
        ax.set_title(f"{key[0]} ({key[1]}), {key[2]} dims: ρ = {rho:.2f}", fontsize=9)
        ax.set_xlabel(f["labels"][0])
        ax.set_ylabel(f["labels"][1])
    fig.colorbar(sc, ax=axes[0].tolist(), label="layer", fraction=0.02)
    fig.suptitle(title)
    return fig


@figure
def fig3(records):
    """Fig. 3: retrieval score against the utility of the first/last dims, by layer."""
    return _scatter(records, "Fig. 3: retrieval score vs utility (one point a head)")


@figure
def fig4(records):
    """Fig. 4: W_q row L1 norm against the utility of the same dims."""
    return _scatter(records, "Fig. 4: W_q row L1 norm vs utility (one point a head)")


@figure
def accuracy_by_position(records):
    """Accuracy by gold position under each mask variant (Tables 1-3 as lines)."""
    panels = _latest(records, lambda f: (f["model"], f["task"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, ((model, task), f) in zip(axes[0], panels.items()):
        for v, acc in f["accuracy"].items():
            ax.plot(f["positions"], acc, marker="o", lw=1.3, ls="-" if v == "none" else "--", label=v)
        ax.set_title(f"{model} ({task}, n = {f['n']})")
        ax.set_xlabel("gold document position")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_xticks(f["positions"])
    axes[0][0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
