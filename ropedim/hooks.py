"""Named instrumentation of attention heads (TransformerLens-style), for transformers 5.

Mechanism. Every supported attention module (Llama, Qwen2, OLMo 2, Gemma 3, Phi, ...)
applies RoPE and then calls ``ALL_ATTENTION_FUNCTIONS.get_interface(
self.config._attn_implementation)(module, query, key, value, mask, scaling=...,
position_ids=..., [sliding_window=...])``. :func:`routed` registers a dispatcher
``ropedim_<impl>`` (attention: the model's own ``<impl>``, or a kernel a caller installs
on the module; masks: the same mask builder as ``<impl>``) and points the model's config
at it. The dispatcher runs the module's pre hooks on the post-RoPE query, the kernel, then
the post hooks. It is the one way ropedim reroutes attention: :func:`capture`,
:func:`masked` and the shared-prefix sweep (``ropedim.shared_prefix``) all enter it, nest
freely, and restore the model on exit, also on error.

Hook points (per attention module; shapes: B batch, H query heads, KVH key/value heads,
T keys, S query positions of the pass, Dh head dim):
- q_pre: output of the q norm (OLMo 2, Gemma 3, Phi) or q_proj  # [B, S, H*Dh] or [B, H, S, Dh]
- pre:   the post-RoPE query before attention                  # query [B, H, S, Dh], key/value [B, KVH, T, Dh]
- post:  each head's attention output                          # [B, S, H, Dh]
"""

from __future__ import annotations

import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .anatomy import (Anatomy, anatomy_of, attention_configs, attention_modules, k_pre_module, mask_shape,
                      q_pre_module)
from .capture import Capture, LayerCapture
from .devices import input_device
from .rope import pair_partner, rotate_storage, storage_cos_sin

__all__ = ["routed", "capture", "masked", "kernel", "BeforeRoPE", "replaced_before_rope"]

_PREFIX = "ropedim_"


# ---------------------------------------------------------------- routing

def _dispatcher(impl: str):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def dispatch(module, query, key, value, attention_mask, **kwargs):
        for hook in getattr(module, "_ropedim_pre", {}).values():
            query = hook(module, query, key, value, kwargs)
        fn = module.__dict__.get("_ropedim_kernel")
        if fn is None and impl == "eager":  # each modeling file has its own eager function
            fn = sys.modules[type(module).__module__].eager_attention_forward
        elif fn is None:
            fn = ALL_ATTENTION_FUNCTIONS[impl]
        out, weights = fn(module, query, key, value, attention_mask, **kwargs)
        for hook in getattr(module, "_ropedim_post", {}).values():
            hook(module, out, kwargs)
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
def routed(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Route the model's attention through the dispatcher (re-entrant); yields the
    attention modules by layer."""
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


@contextmanager
def kernel(model: nn.Module, make: Callable[[int], Callable]) -> Iterator[None]:
    """Replace the attention kernel of layer i by ``make(i)`` (an attention-interface
    function); hooks still run around it. Not nestable: one kernel at a time."""
    with routed(model) as attns:
        if any("_ropedim_kernel" in a.__dict__ for a in attns):
            raise RuntimeError("an attention kernel is already installed on this model")
        try:
            for i, a in enumerate(attns):
                a._ropedim_kernel = make(i)
            yield
        finally:
            for a in attns:
                a.__dict__.pop("_ropedim_kernel", None)


@contextmanager
def _hooked(attns: list[nn.Module], where: str, fns: dict[int, Callable]) -> Iterator[None]:
    """Add ``fns[layer]`` to the ``where`` hooks of those layers; removed on exit."""
    added = []
    try:
        for i, fn in fns.items():
            key = object()
            attns[i].__dict__.setdefault(where, {})[key] = fn
            added.append((attns[i], key))
        yield
    finally:
        for mod, key in added:
            mod.__dict__.get(where, {}).pop(key, None)


def _positions(kwargs, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Absolute position of each query, [B, S] (the model's position_ids)."""
    pos = kwargs.get("position_ids")
    if pos is None:  # no padding, keys are 0..T-1 and queries the last S of them
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

@contextmanager
def capture(model: nn.Module, layers: Iterable[int] | None = None, positions=None,
            keep: Iterable[str] = ("q_pre", "q", "k", "v", "o")) -> Iterator[Capture]:
    """Record a :class:`ropedim.capture.LayerCapture` per layer during forward passes
    (the last pass wins). ``positions`` selects the kept query positions (indices into the
    pass's S): None (all), a slice, or indices. Nothing T×T is stored."""
    keep = set(keep)
    store = Capture()
    handles = []
    with routed(model) as attns:
        want = sorted(set(range(len(attns))) if layers is None else set(layers))
        h = model.config.num_attention_heads
        for i in want:
            store[i] = LayerCapture()

        def on_q_pre(entry, dh):
            def hook(mod, args, out):
                if "q_pre" in keep:
                    if out.dim() == 3:  # [B, S, H*Dh] -> [B, H, S, Dh]
                        out = out.view(*out.shape[:2], h, dh).transpose(1, 2)
                    entry.q_pre = _select(out, positions, 2)
            return hook

        def pre(entry):
            def hook(mod, query, key, value, kw):
                tq, tk = query.shape[2], key.shape[2]
                # queries are the last tq of the tk keys (a sliding-window cache keeps only
                # the window, so key index != position id while decoding)
                entry.q_idx = _select(torch.arange(tk - tq, tk, device=query.device), positions, 0)
                entry.q_pos = _select(_positions(kw, query, key), positions, 1)
                entry.scaling = float(kw.get("scaling", mod.scaling))
                entry.window = kw.get("sliding_window", getattr(mod, "sliding_window", None))
                if "q" in keep:
                    entry.q = _select(query, positions, 2)
                if "k" in keep:
                    entry.k = key.detach().clone()
                if "v" in keep:
                    entry.v = value.detach().clone()
                return query
            return hook

        def post(entry):
            def hook(mod, out, kw):
                if "o" in keep:
                    entry.o = _select(out.transpose(1, 2), positions, 2)
            return hook

        try:
            handles = [q_pre_module(attns[i]).register_forward_hook(on_q_pre(store[i], attns[i].head_dim))
                       for i in want]
            with _hooked(attns, "_ropedim_pre", {i: pre(store[i]) for i in want}), \
                    _hooked(attns, "_ropedim_post", {i: post(store[i]) for i in want}):
                yield store
        finally:
            for hd in handles:
                hd.remove()


# ---------------------------------------------------------------- masking

@dataclass(frozen=True, eq=False)
class BeforeRoPE:
    """A query mask [L, H, Dh] that multiplies the query before RoPE: q' = R(u ⊙ q_pre).
    Where u differs between the two coordinates of a rotary pair this is not u ⊙ R(q_pre):
    masking after RoPE would make q·k depend on more than n − m (Eq. 2)."""

    mask: torch.Tensor


_ANATOMY: "weakref.WeakKeyDictionary[nn.Module, Anatomy]" = weakref.WeakKeyDictionary()


def _anatomy(model: nn.Module) -> Anatomy:
    if model not in _ANATOMY:
        _ANATOMY[model] = anatomy_of(model)
    return _ANATOMY[model]


def _pair_asymmetric(m: torch.Tensor, partner: torch.Tensor) -> bool:
    return not bool((m == m[..., partner]).all())


@contextmanager
def masked(model: nn.Module, mask, from_position: int | None = None,
           variant_of_row: Callable[[], torch.Tensor] | None = None, before_rope=False) -> Iterator[None]:
    """Multiply each head's query by ``mask`` (1 = keep, storage order), after RoPE, or
    before it where ``before_rope`` (a :class:`BeforeRoPE` mask sets it).

    ``mask`` is [L, H, Dh] for the whole batch, or [V, L, H, Dh] with ``variant_of_row()``
    giving the variant [R] of each batch row at call time (the shared-prefix sweep decodes
    V mask variants side by side; ``before_rope`` then has one flag per variant). With
    ``from_position`` only queries at absolute positions >= it are masked (the prompt's KV
    cache is built unmasked). A mask equal on both coordinates of every rotary pair
    commutes with RoPE (both sites give the same query); keys and values are never touched
    (§5.2/§5.4: "mask ... dimensions of the query"). GQA: the mask is per query head; the
    shared KV head is unchanged.
    """
    if isinstance(mask, BeforeRoPE):
        mask, before_rope = mask.mask, True
    mask = torch.as_tensor(mask, device=input_device(model))
    per_row = variant_of_row is not None
    pre = torch.as_tensor(before_rope, dtype=torch.bool, device="cpu").reshape(-1)  # [V] or [1], flags
    with routed(model) as attns:
        if tuple(mask.shape[1:] if per_row else mask.shape) != mask_shape(model):
            raise ValueError(f"mask shape {tuple(mask.shape)} != {'[V, ' if per_row else '['}L, H, Dh] "
                             f"= {mask_shape(model)} of the model")
        a = _anatomy(model) if bool(pre.any()) else None
        fns = {}
        for i in range(len(attns)):
            m = (mask[:, i] if per_row else mask[i]).to(torch.float32)  # [V, H, Dh] or [H, Dh]
            if bool((m == 1).all()):
                continue
            rotate = None
            if a is not None:
                partner = pair_partner(a.head_dim, a.rotary_dim, m.device)
                asym = torch.tensor([_pair_asymmetric(mv, partner) for mv in (m if per_row else m[None])], device="cpu")
                if bool((asym & pre).any()):
                    rotate = (a.theta[i], a.rotary_dim, asym & pre)
            fns[i] = _query_mask(m, per_row, variant_of_row, from_position, rotate)
        with _hooked(attns, "_ropedim_pre", fns):
            yield


def _query_mask(m, per_row, variant_of_row, from_position, rotate):
    """The pre hook of one layer: query [B, H, S, Dh] -> masked query."""
    def pre(mod, query, key, value, kw):
        rows = variant_of_row().to(query.device) if per_row else None
        mm = m.to(query.device, query.dtype)
        mm = mm[rows][:, :, None, :] if per_row else mm[None, :, None, :]  # [B or 1, H, 1, Dh]
        out = query * mm
        if rotate is not None:  # R(u ⊙ R⁻¹ q), in float32
            theta, rotary_dim, flags = rotate
            cos, sin = (x[:, None] for x in storage_cos_sin(theta, _positions(kw, query, key), query.shape[-1]))
            q = rotate_storage(query.float(), cos, sin, rotary_dim, inverse=True)
            alt = rotate_storage(q * mm.float(), cos, sin, rotary_dim).to(query.dtype)
            sel = flags.to(query.device)[rows if per_row else 0]
            out = torch.where(sel.reshape(-1, 1, 1, 1), alt, out)
        if from_position is None:
            return out
        return torch.where((_positions(kw, query, key) >= from_position)[:, None, :, None], out, query)
    return pre


# ---------------------------------------------------------------- replacing dims before RoPE

@contextmanager
def replaced_before_rope(model: nn.Module, role: str, mask: torch.Tensor, fill: torch.Tensor) -> Iterator[None]:
    """The query (``role`` "q": [L, H, Dh]) or key ("k": [L, KVH, Dh]) before RoPE, after
    any q/k norm, set to ``out * mask + (1 − mask) * fill`` per head at every position: a
    0/1 mask with ``fill`` 0 zeroes dims, with the dims' means it is a mean ablation. A
    forward hook on the module that outputs it (outputs [B, S, n·Dh] or [B, n, S, Dh]) in
    each layer whose mask keeps less than everything; removed on exit, also on error."""
    pre = {"q": q_pre_module, "k": k_pre_module}[role]
    mask, fill = mask.float().cpu(), fill.float().cpu()

    def hook_of(m, f):
        def hook(mod, args, out):
            mm, ff = m.to(out.device, out.dtype), f.to(out.device, out.dtype)
            if out.dim() == 3:
                return out * mm.flatten() + (1 - mm.flatten()) * ff.flatten()
            return out * mm[None, :, None, :] + (1 - mm[None, :, None, :]) * ff[None, :, None, :]
        return hook

    handles = []
    try:
        for i, attn in enumerate(attention_modules(model)):
            if not bool((mask[i] == 1).all()):
                handles.append(pre(attn).register_forward_hook(hook_of(mask[i], fill[i])))
        yield
    finally:
        for hd in handles:
            hd.remove()
