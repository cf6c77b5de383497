"""Where a process runs its models: one GPU per pytest-xdist worker, a group of GPUs for a
model too large for one, the CPU where there is no GPU.

The rules (pure functions of the counts, so tests fake them):

- no visible CUDA device: the CPU, for every worker (on a CPU machine nothing changes);
- a model that fits on one GPU (weights at most ``FIT`` of its memory, the rest for the KV
  cache and activations): worker i of n takes GPU ``i mod g`` of the g visible GPUs;
  workers that outnumber the GPUs share them round-robin, and their memory plans split
  each GPU between its ``sharing`` workers (``ropedim.memory``);
- a model that needs k GPUs: the visible GPUs form ``g // k`` groups of k consecutive ones;
  worker i takes group ``i mod (g // k)`` and loads with ``device_map="auto"`` limited to
  its group (``Placement.load_kwargs``), so workers never share a GPU they did not plan for;
- ``-n auto``: one worker per GPU group (``auto_workers``; ``fixtures/devices.py``).

"Visible" respects ``CUDA_VISIBLE_DEVICES``: torch numbers the visible devices 0..g-1.
``$ROPEDIM_DEVICE`` (pytest's ``--device``) overrides: ``cpu``; ``cuda`` (the assignment
above, also the default where CUDA exists); ``cuda:N`` (every worker on GPU N).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Mapping

import torch

__all__ = ["FIT", "Placement", "xdist_worker", "gpus_needed", "place", "auto_workers", "check_device", "current",
           "gpu_memory", "input_device"]

FIT = 0.7  # a model fits on one GPU when its weights take at most this share of its memory


@dataclass(frozen=True)
class Placement:
    """This process's devices: ``gpus`` (CUDA indices; empty: the CPU), shared with
    ``sharing`` processes (itself included)."""

    gpus: tuple[int, ...] = ()
    sharing: int = 1

    @property
    def device(self) -> torch.device:
        """Where inputs go: the first GPU of the group, or the CPU."""
        return torch.device(f"cuda:{self.gpus[0]}") if self.gpus else torch.device("cpu")

    def load_kwargs(self, gpu_bytes: int | None = None) -> dict:
        """``from_pretrained`` arguments that put the weights straight on this placement:
        one device, or ``device_map="auto"`` over the group (each GPU filled to ``FIT`` of
        ``gpu_bytes``, the rest left for the KV cache)."""
        if len(self.gpus) <= 1:
            return {"device_map": {"": str(self.device)}}
        budget = int(FIT * gpu_bytes) if gpu_bytes else None
        return {"device_map": "auto",
                "max_memory": {i: budget if budget else "100%" for i in self.gpus}}


def xdist_worker(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker (``gw3`` of 4 -> (3, 4)); (0, 1) outside xdist."""
    name = env.get("PYTEST_XDIST_WORKER", "")
    if not name.startswith("gw"):
        return 0, 1
    return int(name[2:]), max(1, int(env.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def gpus_needed(weight_bytes: int | None, gpu_bytes: int) -> int:
    """GPUs of ``gpu_bytes`` each that a model of ``weight_bytes`` needs (weights at most
    ``FIT`` of each); unknown weights (small built-in models): 1."""
    if not weight_bytes:
        return 1
    return max(1, math.ceil(weight_bytes / (FIT * gpu_bytes)))


def place(n_gpus: int, worker: int = 0, workers: int = 1, per_model: int = 1) -> Placement:
    """The placement of xdist ``worker`` (0-based) of ``workers`` on ``n_gpus`` visible GPUs
    for a model that needs ``per_model`` of them (see the module's rules)."""
    if n_gpus == 0:
        return Placement()
    if per_model > n_gpus:
        raise RuntimeError(f"the model needs {per_model} GPUs (its weights over {FIT:.0%} of one GPU's memory) "
                           f"but {n_gpus} are visible: make more visible (CUDA_VISIBLE_DEVICES), use GPUs "
                           "with more memory, or run on the CPU with --device cpu")
    groups = n_gpus // per_model
    g = worker % groups
    return Placement(tuple(range(g * per_model, (g + 1) * per_model)), len(range(g, max(workers, g + 1), groups)))


def auto_workers(n_gpus: int, per_model: int = 1) -> int | None:
    """``-n auto``: one worker per GPU group; None on a CPU machine (xdist's own default)."""
    return max(1, n_gpus // per_model) if n_gpus else None


def gpu_memory(n_gpus: int | None = None) -> int:
    """Memory of the smallest visible GPU, in bytes (0 without CUDA)."""
    n = torch.cuda.device_count() if n_gpus is None else n_gpus
    return min((torch.cuda.get_device_properties(i).total_memory for i in range(n)), default=0)


def check_device(want: str) -> str:
    """A valid ``--device`` / ``$ROPEDIM_DEVICE`` value, normalised; ValueError otherwise."""
    want = want.strip().lower()
    if want not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", want):
        raise ValueError(f"--device / $ROPEDIM_DEVICE {want!r}: use auto, cpu, cuda or cuda:N")
    return want


def current(weight_bytes: int | None = None, env: Mapping[str, str] = os.environ) -> Placement:
    """This process's placement for a model of ``weight_bytes`` (None: a small one), from
    ``$ROPEDIM_DEVICE``, the xdist worker and the visible GPUs."""
    want = check_device(env.get("ROPEDIM_DEVICE", "auto"))
    worker, workers = xdist_worker(env)
    if want == "cpu":
        return Placement()
    if want.startswith("cuda:"):
        return Placement((int(want.split(":", 1)[1]),), workers)
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if want == "cuda" and n == 0:
        raise RuntimeError("--device cuda: no CUDA device is visible (check CUDA_VISIBLE_DEVICES and the driver)")
    per_model = gpus_needed(weight_bytes, gpu_memory(n)) if n else 1
    return place(n, worker, workers, per_model)


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's input ids go: its token embedding's device (the first device of a
    model split with ``device_map``)."""
    return model.get_input_embeddings().weight.device
