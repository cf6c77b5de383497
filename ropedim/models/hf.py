"""Models from a local directory, ``$ROPEDIM_MODELS/<repo name>`` or the Hugging Face
cache; never the network."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import devices
from .specs import ModelUnavailable

__all__ = ["from_pretrained", "local_or_hf_cache", "config_of", "weight_bytes"]


def weight_bytes(config, dtype) -> int:
    """Bytes of a model's parameters in ``dtype``, counted on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()) * torch.empty((), dtype=dtype).element_size()


def from_pretrained(path, dtype, attn_implementation, on_gpus: bool = False, **kw):
    """Model and tokenizer from ``path`` (a directory or an HF id in the HF cache);
    ``on_gpus``: straight onto this process's GPU(s) (``ropedim.devices.current`` for the
    model's size: one GPU, or ``device_map="auto"`` over a group of them)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kw["local_files_only"] = True  # never download (HF_HUB_OFFLINE is read at import)
    tok = AutoTokenizer.from_pretrained(path, **kw)
    if on_gpus:
        size = weight_bytes(AutoConfig.from_pretrained(path, **kw), dtype)
        kw.update(devices.current(size).load_kwargs(devices.gpu_memory()))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation, **kw)
    return model, tok


def _local_dirs(name: str, hf_id: str, paper: bool) -> list[Path]:
    """The directories holding the model (config.json), in the order they are tried."""
    dirs = [] if paper else [Path(name).expanduser()]
    if os.environ.get("ROPEDIM_MODELS"):
        dirs.append(Path(os.environ["ROPEDIM_MODELS"]) / hf_id.split("/")[-1])
    return [d for d in dirs if (d / "config.json").is_file()]


def config_of(name: str, hf_id: str, paper: bool):
    """The model's config (no weights read) from where :func:`local_or_hf_cache` would load
    it; None when it is not on this machine."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained((_local_dirs(name, hf_id, paper) or [hf_id])[0], local_files_only=True)
    except (OSError, ValueError):
        return None


def local_or_hf_cache(name: str, hf_id: str, dtype, attn_implementation, paper: bool, on_gpus: bool = False):
    """(model, tokenizer, source) from the directory ``name`` (not for a paper alias),
    ``$ROPEDIM_MODELS/<repo name>``, or the HF cache (``on_gpus``: see :func:`from_pretrained`)."""
    dirs = _local_dirs(name, hf_id, paper)
    if dirs:
        return (*from_pretrained(dirs[0], dtype, attn_implementation, on_gpus), str(dirs[0]))
    if name.startswith(("/", ".", "~")):
        raise ModelUnavailable(f"no model directory (with config.json) at {name}")
    try:
        return (*from_pretrained(hf_id, dtype, attn_implementation, on_gpus), hf_id)
    except (OSError, ValueError) as e:  # not in the HF cache
        raise ModelUnavailable(
            f"{name!r} ({hf_id}) is not available offline ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}).\nProvide it: on a connected machine run "
            f"`huggingface-cli download {hf_id}` (or `hf download {hf_id}`) and copy "
            f"~/.cache/huggingface here; or download it to a directory and pass "
            f"`--model /path/to/{hf_id.split('/')[-1]}`, or set $ROPEDIM_MODELS to the "
            f"directory holding it.") from e
