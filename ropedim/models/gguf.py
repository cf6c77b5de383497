"""Models shipped as GGUF: transformers dequantises the file at load (tens of seconds), so
the first load is saved with ``save_pretrained`` (safetensors) into the ropedim cache
(under a lock, atomically) and later loads read that copy, once it and its files pass the
cache's trust check. The config is then checked against the spec's ``expect``.

Any local ``.gguf`` file is a model too (``--model path/to/model.gguf``): its header is read
here without loading anything (``read_header``: a file that is not GGUF, is truncated or
has no RoPE is refused with one message), its metadata becomes the facts its config is
checked against (``spec_of_file``), and its dequantised copy is keyed by the file's
sha256, not its name."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import torch

from ..cache import check_trusted, lock_for
from .specs import SPECS, STYLE_OF_TYPE, ModelSpec

__all__ = ["snapshot", "check_config", "BadGGUF", "Header", "read_header", "is_gguf_path", "spec_of_file"]

# Architectures transformers reads from GGUF whose attention has no rotary embedding.
NO_ROPE = {"gpt2": "learned absolute positions", "bloom": "ALiBi", "t5": "relative position buckets",
           "umt5": "relative position buckets", "mamba": "a state-space model, no attention"}
# metadata key (after "<arch>.") -> the config attribute it states
_FACTS = {"block_count": "num_hidden_layers", "attention.head_count": "num_attention_heads",
          "attention.head_count_kv": "num_key_value_heads", "embedding_length": "hidden_size"}


class BadGGUF(ValueError):
    """A file given as a GGUF model that cannot be one (the run refuses it up front)."""


@dataclass(frozen=True)
class Header:
    path: Path
    metadata: dict  # scalar and string values; arrays as their length
    n_params: int  # elements of all tensors
    tensor_types: frozenset = field(default_factory=frozenset)

    @property
    def arch(self) -> str:
        return self.metadata["general.architecture"]


def is_gguf_path(name: str) -> bool:
    """Whether ``--model name`` names a GGUF file (by its suffix, or an existing file)."""
    return name.lower().endswith(".gguf") or Path(name).expanduser().is_file()


@lru_cache(maxsize=None)
def read_header(path: Path) -> Header:
    """The header of a GGUF file, read without loading tensors (a second for 150k-token
    vocabularies, where ``gguf.GGUFReader`` takes half a minute). Raises ``BadGGUF`` for a
    file that is missing, not GGUF, truncated, of an architecture transformers cannot read
    or one without RoPE."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    path = Path(path).expanduser()
    if not path.is_file():
        raise BadGGUF(f"{path}: no such GGUF file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise BadGGUF(f"{path}: not a GGUF file (it does not start with the GGUF magic)")
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            if version not in (2, 3):
                raise BadGGUF(f"{path}: GGUF version {version} is not supported (2 or 3; big-endian files neither)")
            meta = dict(_kv(f) for _ in range(n_kv))
            tensors = [_tensor_info(f) for _ in range(n_tensors)]
            align = int(meta.get("general.alignment", 32))
            data_start = -(-f.tell() // align) * align
    except (struct.error, UnicodeDecodeError, EOFError, MemoryError, OverflowError) as e:
        raise BadGGUF(f"{path}: truncated or corrupt GGUF header ({type(e).__name__}: {e})") from None
    n_params, end, types = 0, data_start, set()
    for name, shape, ttype, offset in tensors:
        try:
            qt = GGMLQuantizationType(ttype)
        except ValueError:
            raise BadGGUF(f"{path}: tensor {name} has an unknown type {ttype}") from None
        block, nbytes = GGML_QUANT_SIZES[qt]
        n = 1
        for d in shape:
            n *= d
        n_params += n
        end = max(end, data_start + offset + n // block * nbytes)
        types.add(qt.name)
    if size < end:
        raise BadGGUF(f"{path}: truncated: its tensors end at byte {end}, the file has {size} bytes")
    arch = meta.get("general.architecture")
    if arch not in GGUF_CONFIG_MAPPING:
        raise BadGGUF(f"{path}: architecture {arch!r} cannot be read by transformers from GGUF "
                      f"(it reads: {', '.join(a for a in GGUF_CONFIG_MAPPING if a not in ('general', 'tokenizer'))})")
    if arch in NO_ROPE:
        raise BadGGUF(f"{path}: architecture {arch!r} has no RoPE ({NO_ROPE[arch]}); the paper's claims are "
                      "about rotary position embeddings")
    return Header(path, meta, n_params, frozenset(types))


def _read(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EOFError(f"file ends at byte {f.tell()}")
    return b


_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    return _read(f, n).decode("utf-8")


def _value(f: BinaryIO, vtype: int):
    if vtype in _SCALAR:
        fmt = "<" + _SCALAR[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if vtype == 8:
        return _string(f)
    if vtype == 9:  # an array: kept as its length (tokenizer vocabularies, merges)
        etype, n = struct.unpack("<IQ", _read(f, 12))
        if etype in _SCALAR:
            f.seek(n * struct.calcsize("<" + _SCALAR[etype]), os.SEEK_CUR)
        else:
            for _ in range(n):
                _value(f, etype)
        return n
    raise ValueError(f"unknown GGUF value type {vtype}")


def _kv(f: BinaryIO):
    key = _string(f)
    (vtype,) = struct.unpack("<I", _read(f, 4))
    return key, _value(f, vtype)


def _tensor_info(f: BinaryIO):
    name = _string(f)
    (n_dims,) = struct.unpack("<I", _read(f, 4))
    shape = struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims))
    ttype, offset = struct.unpack("<IQ", _read(f, 12))
    return name, shape, ttype, offset


def file_sha256(path: Path) -> str:
    """The file's sha256 (about 1 GB/s): what a GGUF given by path is cached under."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def spec_of_file(path: str | Path) -> ModelSpec:
    """A ``real`` spec for a local GGUF file: its prompt style (App. B's format of a paper
    family where the file's chat template is that format, else the template itself, else
    plain) and the config facts its metadata states."""
    h = read_header(Path(path).expanduser().resolve())
    meta, arch = h.metadata, h.arch
    expect = {"model_type": "gemma3_text" if arch == "gemma3" else arch}
    expect |= {attr: meta[f"{arch}.{key}"] for key, attr in _FACTS.items() if f"{arch}.{key}" in meta}
    if f"{arch}.rope.freq_base" in meta and not arch.startswith("gemma"):  # gemma: one base of two
        expect["rope"] = {"default": meta[f"{arch}.rope.freq_base"]}
    style = _style(arch, meta.get("tokenizer.chat_template"))
    title = f"{meta.get('general.name', h.path.name)} ({arch}, {'/'.join(sorted(h.tensor_types))})"
    return ModelSpec(str(path), "real", title, style, gguf_file=lambda root: h.path, expect=expect)


# App. B's format of a paper family stands for a file's own template only where it is that format
_MARKER = {"llama": "<|start_header_id|>", "qwen": "<|im_start|>", "olmo": "<|user|>"}


def _style(arch: str, template: str | None) -> str:
    paper = STYLE_OF_TYPE.get(arch)
    if template and paper and _MARKER[paper] in template:
        return paper
    return "chat_template" if template else "plain"


def snapshot(spec: ModelSpec, root: Path, notes: list[str]) -> Path:
    """A save_pretrained copy of the dequantised GGUF model, made once under a lock. An
    alias's file is named by its pinned wheel (name and size); a file given by path by its
    content (a renamed copy finds the same snapshot)."""
    import transformers

    gguf = spec.gguf_file(root)
    ident = f"{gguf.name}-{gguf.stat().st_size}" if spec.alias in SPECS else f"gguf-sha256-{file_sha256(gguf)[:20]}"
    key = f"{ident}-tf{transformers.__version__}"
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
        final.parent.mkdir(parents=True, exist_ok=True)
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


def _fact(cfg, key: str):
    """A config value; ``head_dim`` where the config leaves it implicit (Qwen2: hidden / heads)."""
    got = getattr(cfg, key, None)
    if got is None and key == "head_dim":
        return cfg.hidden_size // cfg.num_attention_heads
    return got


def check_config(spec: ModelSpec, cfg) -> None:
    """Refuse a loaded config that differs from the spec's ``expect``."""
    exp = dict(spec.expect)
    rope = exp.pop("rope", {})
    bad = {k: (_fact(cfg, k), v) for k, v in exp.items() if _fact(cfg, k) != v}
    rp = cfg.rope_parameters
    for key, base in rope.items():
        got = rp["rope_theta"] if key == "default" else rp[key]["rope_theta"]
        if got != base:
            bad[f"rope_theta[{key}]"] = (got, base)
    if bad:
        raise RuntimeError(f"{spec.alias}: unexpected config values (got, expected): {bad}")
