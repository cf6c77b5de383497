"""Models shipped as GGUF: transformers dequantises the file at load (tens of seconds), so
the first load is saved with ``save_pretrained`` (safetensors) into the ropedim cache
(under a lock, atomically) and later loads read that copy, once it and its files pass the
cache's trust check. The config is then checked against the spec's ``expect``."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..cache import check_trusted, lock_for
from .specs import ModelSpec

__all__ = ["snapshot", "check_config"]


def snapshot(spec: ModelSpec, root: Path, notes: list[str]) -> Path:
    """A save_pretrained copy of the dequantised GGUF model, made once under a lock."""
    import transformers

    gguf = spec.gguf_file(root)
    key = f"{gguf.name}-{gguf.stat().st_size}-tf{transformers.__version__}"
    final = root / "models" / key
    if (final / "config.json").exists():
        return _trusted(final)
    with lock_for(final):
        if (final / "config.json").exists():
            return _trusted(final)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        if spec.fixups is not None:
            notes += spec.fixups(model.config)
        # the weights are plain float32 now; drop the GGUF marker so the copy loads as such
        model.config.quantization_config = None
        del model.config.quantization_config
        model.hf_quantizer = None
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
        os.chmod(tmp, 0o755)
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            for f in tmp.rglob("*"):  # whatever the umask: writable by this user only
                f.chmod(f.stat().st_mode & ~0o022)
            os.replace(tmp, final)  # atomic: readers see all or nothing
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        notes.append(f"dequantised {gguf.name} in {time.perf_counter() - t0:.0f} s, saved to {final}")
    return final


def _trusted(final: Path) -> Path:
    """The snapshot folder, once it and every file in it pass ``check_trusted``."""
    for p in [final, *sorted(final.rglob("*"))]:
        check_trusted(p)
    return final


def check_config(spec: ModelSpec, cfg) -> None:
    """Refuse a loaded config that differs from the spec's ``expect``."""
    exp = dict(spec.expect)
    rope = exp.pop("rope", {})
    bad = {k: (getattr(cfg, k, None), v) for k, v in exp.items() if getattr(cfg, k, None) != v}
    rp = cfg.rope_parameters
    for key, base in rope.items():
        got = rp["rope_theta"] if key == "default" else rp[key]["rope_theta"]
        if got != base:
            bad[f"rope_theta[{key}]"] = (got, base)
    if bad:
        raise RuntimeError(f"{spec.alias}: unexpected config values (got, expected): {bad}")
