"""The RoPE facts of a loaded model, read from the model's own modules, never assumed.

The paper orders a head's dimensions "by the magnitude of θ, from greater to smaller"
(§3, footnote 1). Which storage index has which θ depends on the layout (HF half-split),
partial rotary (Phi, GPT-NeoX), scaled frequencies (llama3, YaRN) and per-layer bases
(Gemma 3 local/global layers), so θ is taken from each layer's rotary ``inv_freq``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .rope import theta_rank_of_storage

__all__ = ["Anatomy", "anatomy_of", "attention_modules", "rotary_module", "q_pre_module", "k_pre_module"]


@dataclass
class Anatomy:
    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rotary_dim: int  # 2 × number of rotating pairs (< head_dim for partial rotary)
    layout: str  # "half": HF rotate_half, storage j pairs with j + rotary_dim/2
    theta: torch.Tensor  # float32 [L, rotary_dim/2]: θ of each pair in storage order
    rank: torch.Tensor  # long [L, head_dim]: θ rank (0 = highest θ) of each storage index
    group: torch.Tensor  # long [H]: the KV head each query head reads (GQA)
    layer_types: list[str | None]  # e.g. "sliding_attention" / "full_attention" (Gemma 3)
    rope_type: list[str]  # per layer: "default", "llama3", "yarn", ...
    sliding_window: list[int | None]  # per layer: keys with q_pos - k_pos < window are seen
    scaling: list[float]  # per layer: softmax scale applied to q·k
    rope_attention_scaling: list[float]  # per layer: multiplier on cos/sin (YaRN), else 1
    qk_norm: bool  # q and k are normalised before RoPE (OLMo 2, Gemma 3, Phi qk_layernorm)
    q_norm_scale: torch.Tensor | None  # [L, H, Dh]: effective per-dim gain of the q norm

    @property
    def n_pairs(self) -> int:
        return self.rotary_dim // 2


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer, by layer index."""
    mods = [m for m in model.modules()
            if hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "layer_idx")]
    if not mods:
        raise ValueError(f"no q_proj/k_proj attention modules found in {type(model).__name__}")
    return sorted(mods, key=lambda m: m.layer_idx)


def attention_configs(model: nn.Module) -> list:
    """The distinct configs that name the attention implementation (model and layers)."""
    return list({id(c): c for c in [model.config, *(a.config for a in attention_modules(model))]}.values())


def mask_shape(model: nn.Module) -> tuple[int, int, int]:
    """[L, H, Dh] of a per-head query-dimension mask."""
    attns = attention_modules(model)
    return len(attns), model.config.num_attention_heads, attns[0].head_dim


def rotary_module(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if type(m).__name__.endswith("RotaryEmbedding"):
            return m
    raise ValueError(f"no rotary embedding module in {type(model).__name__}")


def q_pre_module(attn: nn.Module) -> nn.Module:
    """The module whose output is the query just before RoPE (q norm if any, else q_proj)."""
    for name in ("q_norm", "q_layernorm"):
        if isinstance(getattr(attn, name, None), nn.Module):
            return getattr(attn, name)
    return attn.q_proj


def k_pre_module(attn: nn.Module) -> nn.Module:
    """The module whose output is the key just before RoPE (k norm if any, else k_proj)."""
    for name in ("k_norm", "k_layernorm"):
        if isinstance(getattr(attn, name, None), nn.Module):
            return getattr(attn, name)
    return attn.k_proj


def _q_norm_scale(attn: nn.Module, n_heads: int, head_dim: int) -> torch.Tensor | None:
    """Per-dim gain of the query norm, [H, Dh]. Gemma 3's RMSNorm multiplies by (1 + w);
    OLMo 2's normalises all heads together with one weight of H·Dh; LayerNorm (Phi) by w."""
    mod = q_pre_module(attn)
    if mod is attn.q_proj:
        return None
    w = mod.weight.detach().float()
    if type(mod).__name__.startswith("Gemma"):
        w = 1.0 + w
    return w.reshape(-1, head_dim).expand(n_heads, head_dim).clone()


def anatomy_of(model: nn.Module) -> Anatomy:
    cfg = model.config
    attns = attention_modules(model)
    rot = rotary_module(model)
    a0 = attns[0]
    n_heads, head_dim = cfg.num_attention_heads, a0.head_dim
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    layer_types = list(getattr(cfg, "layer_types", None) or [None] * len(attns))
    thetas, rtypes, rscale, windows, scales = [], [], [], [], []
    for i, attn in enumerate(attns):
        lt = layer_types[i]
        per_type = lt is not None and hasattr(rot, f"{lt}_inv_freq")  # Gemma 3 style
        pre = f"{lt}_" if per_type else ""
        thetas.append(getattr(rot, f"{pre}inv_freq").detach().float().cpu())
        rt = rot.rope_type
        rtypes.append(rt[lt] if isinstance(rt, dict) else rt)
        rscale.append(float(getattr(rot, f"{pre}attention_scaling", 1.0)))
        windows.append(getattr(attn, "sliding_window", None))
        scales.append(float(attn.scaling))
    theta = torch.stack(thetas)
    rotary_dim = 2 * theta.shape[1]
    # the attention module's own view of the rotary part, where it has one (Phi)
    assert getattr(a0, "rotary_ndims", rotary_dim) == rotary_dim, "rotary_dim mismatch"
    rank = torch.stack([theta_rank_of_storage(t, head_dim, "half") for t in theta])
    qs = [_q_norm_scale(a, n_heads, head_dim) for a in attns]
    return Anatomy(
        model_type=cfg.model_type, n_layers=len(attns), n_heads=n_heads, n_kv_heads=n_kv,
        head_dim=head_dim, rotary_dim=rotary_dim, layout="half", theta=theta, rank=rank,
        group=torch.arange(n_heads) // (n_heads // n_kv), layer_types=layer_types,
        rope_type=rtypes, sliding_window=windows, scaling=scales,
        rope_attention_scaling=rscale, qk_norm=qs[0] is not None,
        q_norm_scale=torch.stack(qs) if qs[0] is not None else None)
