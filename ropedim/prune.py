"""Beyond the paper (issue 14, part 3): the efficiency the paper names (§1, §7) and leaves
open. A query dim masked in a head contributes nothing to that head's scores q·k, so the
dim can be removed from q and from k altogether: a smaller computation with the same
outputs. :func:`pruned` runs a model that way (the scores of each head computed on its
kept dims only, ``torch.nn.functional.scaled_dot_product_attention`` on the smaller
tensors); tests/test_prune.py checks that its outputs equal the masked model's.

What it saves (:func:`savings`), per token of context:
- attention-score multiply-adds: the pruned share of all query heads' dims;
- K-cache bytes: a key dim can be dropped from the cache only where every query head that
  reads that KV head (GQA) prunes it; values are never touched.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from .hooks import kernel

__all__ = ["pruned", "savings"]


def _groups(keep: torch.Tensor) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per layer: (kept storage dims, the query heads keeping exactly them)."""
    out = []
    for layer in keep:
        sets: dict[tuple, list[int]] = {}
        for h, row in enumerate(layer):
            sets.setdefault(tuple(torch.nonzero(row).flatten().tolist()), []).append(h)
        out.append([(torch.tensor(dims, dtype=torch.long), torch.tensor(heads, dtype=torch.long))
                    for dims, heads in sets.items()])
    return out


def _pruned_attention(groups):
    def attend(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        b, h, s, _ = query.shape
        g = h // key.shape[1]
        k, v = key.repeat_interleave(g, dim=1), value.repeat_interleave(g, dim=1)  # per query head
        mask = attention_mask[:, :, :, :k.shape[-2]] if attention_mask is not None else None
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(query.dtype)
        causal = mask is None and s > 1 and getattr(module, "is_causal", True)
        out = query.new_empty(b, h, s, v.shape[-1])
        for dims, heads in groups:
            dims, heads = dims.to(query.device), heads.to(query.device)
            if len(dims) == 0:  # every score is 0: uniform attention over the visible keys
                q_, k_ = query.new_zeros(b, len(heads), s, 1), k.new_zeros(b, len(heads), k.shape[2], 1)
            else:
                q_, k_ = query[:, heads][..., dims], k[:, heads][..., dims]
            out[:, heads] = F.scaled_dot_product_attention(q_, k_, v[:, heads], attn_mask=mask, is_causal=causal,
                                                           scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    return attend


@contextmanager
def pruned(model, keep: torch.Tensor) -> Iterator[None]:
    """Run ``model`` with the dims where ``keep`` [L, H, Dh] (storage order) is False removed
    from each head's query and key before its scores (post-RoPE; whole rotary pairs are
    what a mask of ropedim removes, and they commute with RoPE). Not for soft-capped logits."""
    keep = torch.as_tensor(keep).bool().cpu()
    if getattr(model.config, "attn_logit_softcapping", None):
        raise NotImplementedError("pruned attention has no logit soft-capping")
    groups = _groups(keep)
    with kernel(model, lambda layer: _pruned_attention(groups[layer])):
        yield


def savings(keep: torch.Tensor, n_kv_heads: int) -> dict[str, float]:
    """Shares saved by pruning where ``keep`` [L, H, Dh] is False: of the attention-score
    multiply-adds (every query head's dims), and of the K cache (a KV head's dim is dropped
    only where all its query heads prune it) and of the K and V caches together."""
    keep = torch.as_tensor(keep).bool()
    L, H, D = keep.shape
    g = H // n_kv_heads
    kv_keep = keep.view(L, n_kv_heads, g, D).any(2)  # [L, KVH, Dh]: kept by some query head of the group
    k_saved = float(1 - kv_keep.float().mean())
    return {"score_flops": float(1 - keep.float().mean()), "k_cache": k_saved, "kv_cache": k_saved / 2}
