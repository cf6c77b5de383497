"""Figures of the report, drawn by the controller from the records' figure data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

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
    fig.suptitle("Fig. 1a: average magnitude per dimension")
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
