"""Named instrumentation of attention heads (TransformerLens-style), for transformers 5.

Mechanism. Every supported attention module (Llama, Qwen2, OLMo 2, Gemma 3, Phi, ...)
applies RoPE and then calls ``ALL_ATTENTION_FUNCTIONS.get_interface(
self.config._attn_implementation)(module, query, key, value, mask, scaling=...,
position_ids=..., [sliding_window=...])``. Inside a context below we register a dispatcher
``ropedim_<impl>`` (attention: the model's own ``<impl>``; masks: the same mask builder as
``<impl>``) and point the model's config at it; the dispatcher runs the per-module hooks on
the post-RoPE query, then delegates. The pre-RoPE query comes from a forward hook on the
q norm (OLMo 2, Gemma 3, Phi) or q_proj. Everything is undone on exit, also on error.

Shapes: B batch, H query heads, KVH key/value heads, T keys, S kept query positions,
Dh head dim, L layers.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from .anatomy import Anatomy, attention_configs, attention_modules, mask_shape, q_pre_module
from .rope import first_last_mask

__all__ = ["capture", "masked", "attention", "attention_weights", "mask_first_last",
           "mask_from_utility", "Capture"]

_PREFIX = "ropedim_"


# ---------------------------------------------------------------- dispatcher plumbing

def _dispatcher(impl: str):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def dispatch(module, query, key, value, attention_mask, **kwargs):
        for hook in getattr(module, "_ropedim_pre", {}).values():
            query = hook(module, query, key, value, kwargs)
        if impl == "eager":  # each modeling file has its own eager function
            fn = sys.modules[type(module).__module__].eager_attention_forward
        else:
            fn = ALL_ATTENTION_FUNCTIONS[impl]
        out, weights = fn(module, query, key, value, attention_mask, **kwargs)
        for hook in getattr(module, "_ropedim_post", {}).values():
            hook(module, out, kwargs)  # out: [B, T, H, Dh]
        return out, weights

    return dispatch


def _ensure_registered(impl: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = _PREFIX + impl
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _dispatcher(impl))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[impl])
    return name


@contextmanager
def _routed(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Route the model's attention through the dispatcher (re-entrant)."""
    attns = attention_modules(model)
    configs = attention_configs(model)
    depth = getattr(model, "_ropedim_depth", 0)
    saved = [c._attn_implementation for c in configs]
    if depth == 0:
        for c, impl in zip(configs, saved):
            if impl.startswith(_PREFIX):
                raise RuntimeError("model left routed by an earlier ropedim context")
            c._attn_implementation = _ensure_registered(impl)
    model._ropedim_depth = depth + 1
    try:
        yield attns
    finally:
        model._ropedim_depth = depth
        if depth == 0:
            for c, impl in zip(configs, saved):
                c._attn_implementation = impl


def _add(mod: nn.Module, where: str, fn) -> object:
    key = object()
    if not hasattr(mod, where):
        setattr(mod, where, {})
    getattr(mod, where)[key] = fn
    return key


def _remove(mod: nn.Module, where: str, key) -> None:
    getattr(mod, where, {}).pop(key, None)


def _positions(kwargs, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Absolute position of each query, [B, Tq] (the model's position_ids)."""
    pos = kwargs.get("position_ids")
    if pos is None:  # no padding, keys are 0..T-1 and queries the last Tq of them
        tq, tk = query.shape[2], key.shape[2]
        pos = torch.arange(tk - tq, tk, device=query.device)[None]
    return pos.expand(query.shape[0], -1)


def _select(x: torch.Tensor, positions, dim: int) -> torch.Tensor:
    if positions is None:
        return x.detach().clone()
    if isinstance(positions, slice):
        return x.detach()[(slice(None),) * dim + (positions,)].clone()
    idx = torch.as_tensor(positions, device=x.device, dtype=torch.long)
    return x.detach().index_select(dim, idx)


# ---------------------------------------------------------------- capture

class Capture(dict):
    """``store[layer]`` -> dict of tensors from the last forward pass:
    q_pre [B, H, S, Dh] query before RoPE (after q norm), q [B, H, S, Dh] after RoPE (what
    attention used, i.e. after any active mask), k [B, KVH, T, Dh] after RoPE, v [B, KVH, T,
    Dh], o [B, H, S, Dh] each head's attention output, q_idx [S] index of each kept query
    among the keys (its causal horizon), q_pos [B, S] its position id, scaling (float),
    window (int | None). Left-padded batches: pass ``key_mask`` to :meth:`attention`."""

    def attention(self, layer: int, **kw) -> torch.Tensor:
        """Recompute the per-head output of ``layer`` from the captured tensors."""
        e = self[layer]
        return attention(e["q"], e["k"], e["v"], e["scaling"], e["q_idx"], e["window"], **kw)


@contextmanager
def capture(model: nn.Module, layers: Iterable[int] | None = None, positions=None,
            keep: Iterable[str] = ("q_pre", "q", "k", "v", "o")) -> Iterator[Capture]:
    """Record attention tensors per layer during forward passes (the last pass wins).

    ``positions`` selects which query positions (indices into the pass's T) are kept: None
    (all), a slice, or indices. Nothing T×T is stored.
    """
    keep = set(keep)
    store = Capture()
    handles, added = [], []
    with _routed(model) as attns:
        want = set(range(len(attns))) if layers is None else set(layers)
        try:
            for i, attn in enumerate(attns):
                if i not in want:
                    continue
                entry = store.setdefault(i, {})
                h, dh = model.config.num_attention_heads, attn.head_dim

                def on_q_pre(mod, args, out, entry=entry, h=h, dh=dh):
                    if out.dim() == 3:  # [B, T, H*Dh] -> [B, H, T, Dh]
                        out = out.view(*out.shape[:2], h, dh).transpose(1, 2)
                    if "q_pre" in keep:
                        entry["q_pre"] = _select(out, positions, 2)

                def pre(mod, query, key, value, kw, entry=entry):
                    tq, tk = query.shape[2], key.shape[2]
                    # queries are the last tq of the tk keys (a sliding-window cache keeps
                    # only the window, so key index != position id while decoding)
                    idx = torch.arange(tk - tq, tk, device=query.device)
                    entry.update(q_idx=_select(idx, positions, 0),
                                 q_pos=_select(_positions(kw, query, key), positions, 1),
                                 scaling=float(kw.get("scaling", mod.scaling)),
                                 window=kw.get("sliding_window", getattr(mod, "sliding_window", None)))
                    if "q" in keep:
                        entry["q"] = _select(query, positions, 2)
                    if "k" in keep:
                        entry["k"] = key.detach().clone()
                    if "v" in keep:
                        entry["v"] = value.detach().clone()
                    return query

                def post(mod, out, kw, entry=entry):
                    if "o" in keep:
                        entry["o"] = _select(out.transpose(1, 2), positions, 2)

                handles.append(q_pre_module(attn).register_forward_hook(on_q_pre))
                added += [(attn, "_ropedim_pre", _add(attn, "_ropedim_pre", pre)),
                          (attn, "_ropedim_post", _add(attn, "_ropedim_post", post))]
            yield store
        finally:
            for hd in handles:
                hd.remove()
            for mod, where, key in added:
                _remove(mod, where, key)


# ---------------------------------------------------------------- masking

@contextmanager
def masked(model: nn.Module, mask: torch.Tensor, from_position: int | None = None) -> Iterator[None]:
    """Multiply each head's post-RoPE query by ``mask`` [L, H, Dh] (1 = keep, storage order).

    With ``from_position`` only queries at absolute positions >= it are masked (so the
    prompt's KV cache is built unmasked and generated tokens are masked). A mask equal on
    both coordinates of every rotary pair commutes with RoPE, so it equals masking the
    pre-RoPE query; keys and values are never touched (§5.2/§5.4: "mask ... dimensions of
    the query"). For GQA the mask is per query head; the shared KV head is unchanged.
    """
    mask = torch.as_tensor(mask)
    added = []
    with _routed(model) as attns:
        if tuple(mask.shape) != mask_shape(model):
            raise ValueError(f"mask shape {tuple(mask.shape)} != [L, H, Dh] of the model")
        try:
            for i, attn in enumerate(attns):
                m = mask[i].to(torch.float32)
                if bool((m == 1).all()):
                    continue

                def pre(mod, query, key, value, kw, m=m):
                    mm = m.to(query.device, query.dtype)[None, :, None, :]  # [1, H, 1, Dh]
                    if from_position is None:
                        return query * mm
                    sel = (_positions(kw, query, key) >= from_position)[:, None, :, None]
                    return torch.where(sel, query * mm, query)

                added.append((attn, _add(attn, "_ropedim_pre", pre)))
            yield
        finally:
            for mod, key in added:
                _remove(mod, "_ropedim_pre", key)


def mask_first_last(anatomy: Anatomy, which: str, k: int,
                    heads: Iterable[tuple[int, int]]) -> torch.Tensor:
    """[L, H, Dh] float mask zeroing the first/last ``k`` coordinates in the paper's order
    (θ from high to low; "the first 16 dimensions" = the 8 highest-frequency pairs) of each
    (layer, head) in ``heads``; other heads are all ones. ``k`` counts coordinates: a caller
    transferring the paper's 16 of 128 to a 64-dim head passes 8."""
    a = anatomy
    mask = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    for layer, head in heads:
        mask[layer, head, first_last_mask(a.rank[layer], which, k)] = 0.0
    return mask


def mask_from_utility(u: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """§5.2: keep dimensions whose utility score is >= threshold, mask those below."""
    return (torch.as_tensor(u) >= threshold).to(torch.float32)


# ---------------------------------------------------------------- recomputation

def attention_chunks(q, k, scaling, q_positions, window, k_positions, key_mask, chunk):
    """Yield (slice, probs [B, KVH, G, s, T]) over chunks of query positions (float32+)."""
    b, h, s, dh = q.shape
    kvh, t = k.shape[1], k.shape[2]
    g = h // kvh
    dt = torch.promote_types(q.dtype, torch.float32)
    qpos = torch.as_tensor(q_positions, device=q.device).expand(b, s)
    kpos = (torch.arange(t, device=q.device) if k_positions is None
            else torch.as_tensor(k_positions, device=q.device))
    kf = k.to(dt)
    qg = q.to(dt).reshape(b, kvh, g, s, dh)  # query head j reads KV head j // g
    if chunk is None:  # keep one chunk's scores near 2^24 floats
        chunk = max(1, (1 << 24) // max(1, b * h * t))
    for start in range(0, s, chunk):
        sl = slice(start, min(s, start + chunk))
        sc = torch.einsum("bngsd,bntd->bngst", qg[:, :, :, sl], kf) * scaling
        qp = qpos[:, sl, None]  # [B, s, 1]
        ok = kpos[None, None, :] <= qp  # causal
        if window is not None:
            ok = ok & (kpos[None, None, :] > qp - window)  # HF: kv > q - window
        if key_mask is not None:
            ok = ok & torch.as_tensor(key_mask, device=q.device).bool()[:, None, :]
        sc = sc.masked_fill(~ok[:, None, None], float("-inf"))
        yield sl, torch.softmax(sc, dim=-1).nan_to_num(0.0)  # rows with no key -> 0


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float,
              q_positions, window: int | None = None, *, k_positions=None,
              key_mask: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Per-head attention output [B, H, S, Dh] (float32, differentiable in q).

    q [B, H, S, Dh] post-RoPE queries at ``q_positions`` ([S] or [B, S]); k, v [B, KVH, T,
    Dh] at ``k_positions`` (default 0..T-1, i.e. q_positions are key indices); causal, plus a
    sliding window (key seen iff q_pos - k_pos < window) and ``key_mask`` [B, T] (False =
    padding).
    GQA: query head j uses KV head j // (H / KVH). Memory O(chunk × T) per head.
    """
    b, h, s, dh = q.shape
    vf = v.to(torch.promote_types(q.dtype, torch.float32))
    out = []
    for sl, p in attention_chunks(q, k, scaling, q_positions, window, k_positions, key_mask, chunk):
        out.append(torch.einsum("bngst,bntd->bngsd", p, vf))
    return torch.cat(out, dim=3).reshape(b, h, s, v.shape[-1])


def attention_weights(q: torch.Tensor, k: torch.Tensor, scaling: float, q_positions,
                      window: int | None = None, *, k_positions=None,
                      key_mask: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Attention probabilities [B, H, S, T] (float32), masked as in :func:`attention`."""
    b, h, s, _ = q.shape
    parts = [p for _, p in attention_chunks(q, k, scaling, q_positions, window, k_positions,
                                          key_mask, chunk)]
    return torch.cat(parts, dim=3).reshape(b, h, s, k.shape[2])
