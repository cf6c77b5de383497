"""Models from a local directory, ``$ROPEDIM_MODELS/<repo name>`` or the Hugging Face
cache; never the network."""

from __future__ import annotations

import os
from pathlib import Path

from .specs import ModelUnavailable

__all__ = ["from_pretrained", "local_or_hf_cache"]


def from_pretrained(path, dtype, attn_implementation, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw["local_files_only"] = True  # never download (HF_HUB_OFFLINE is read at import)
    tok = AutoTokenizer.from_pretrained(path, **kw)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation, **kw)
    return model, tok


def local_or_hf_cache(name: str, hf_id: str, dtype, attn_implementation, paper: bool):
    """(model, tokenizer, source) from the directory ``name`` (not for a paper alias),
    ``$ROPEDIM_MODELS/<repo name>``, or the HF cache."""
    dirs = [] if paper else [Path(name).expanduser()]
    if os.environ.get("ROPEDIM_MODELS"):
        dirs.append(Path(os.environ["ROPEDIM_MODELS"]) / hf_id.split("/")[-1])
    for d in dirs:
        if (d / "config.json").is_file():
            return (*from_pretrained(d, dtype, attn_implementation), str(d))
    if name.startswith(("/", ".", "~")):
        raise ModelUnavailable(f"no model directory (with config.json) at {name}")
    try:
        return (*from_pretrained(hf_id, dtype, attn_implementation), hf_id)
    except (OSError, ValueError) as e:  # not in the HF cache
        raise ModelUnavailable(
            f"{name!r} ({hf_id}) is not available offline ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}).\nProvide it: on a connected machine run "
            f"`huggingface-cli download {hf_id}` (or `hf download {hf_id}`) and copy "
            f"~/.cache/huggingface here; or download it to a directory and pass "
            f"`--model /path/to/{hf_id.split('/')[-1]}`, or set $ROPEDIM_MODELS to the "
            f"directory holding it.") from e
