"""Softmax attention as ropedim computes it outside the model: the one key-mask rule, the
chunked probabilities, and attention with its log-sum-exp (for merging two key sets).

The rule, for every caller (recomputation from captures, retrieval rows, Eq. 4, the
shared-prefix sweep): a query at position p sees the key at position j iff
``0 <= j <= p`` (causal; j = -1 marks padding) and, in a sliding-window layer,
``j > p - window`` (transformers' convention). Keys are masked by position, never by
index, so left-padded batches and shared prefixes are exact.

Shapes: B batch, H query heads, KVH key/value heads (GQA: query head h reads KV head
h // (H / KVH)), S queries, T keys, Dh head dim. Probabilities are float32 or wider.
"""

from __future__ import annotations

from typing import Iterator

import torch

__all__ = ["position_bias", "key_bias", "softmax_rows", "attention_chunks", "attention",
           "attention_weights", "sdpa_with_lse", "merge_lse"]


def position_bias(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [..., S, T]: 0 where the query at position p sees the key at position j
    (0 <= j <= p, j > p - window), -inf elsewhere."""
    p, j = q_pos[..., :, None], k_pos.to(q_pos.device)[..., None, :]
    ok = (j >= 0) & (j <= p)
    if window is not None:
        ok &= j > p - window
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill_(~ok, float("-inf"))


def key_bias(q_pos: torch.Tensor, T: int, window: int | None = None) -> torch.Tensor:
    """Additive mask [S, T] over keys at positions 0..T-1 (see :func:`position_bias`)."""
    return position_bias(q_pos, torch.arange(T, device=q_pos.device), window)


def softmax_rows(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; a row with no visible key (all -inf) gives 0."""
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def attention_chunks(q, k, scaling, q_positions, window=None, k_positions=None, key_mask=None,
                     chunk=None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (query slice, probabilities [B, KVH, G, s, T]) over chunks of query rows.

    q [B, H, S, Dh] at ``q_positions`` ([S] or [B, S]); k [B, KVH, T, Dh] at
    ``k_positions`` (default 0..T-1); ``key_mask`` [B, T] (False = padding). GQA without
    repeating K. Memory O(chunk × T) per head."""
    b, h, s, dh = q.shape
    kvh, t = k.shape[1], k.shape[2]
    if h % kvh:
        raise ValueError(f"{h} query heads do not split over {kvh} KV heads")
    g = h // kvh
    dt = torch.promote_types(q.dtype, torch.float32)
    qpos = torch.as_tensor(q_positions, device=q.device).expand(b, s)
    kpos = (torch.arange(t, device=q.device) if k_positions is None
            else torch.as_tensor(k_positions, device=q.device))
    if key_mask is not None:
        kpos = torch.where(torch.as_tensor(key_mask, device=q.device).bool(), kpos, -1)
    kf = k.to(dt)
    qg = q.to(dt).reshape(b, kvh, g, s, dh)
    if chunk is None:  # keep one chunk's scores near 2^24 floats
        chunk = max(1, (1 << 24) // max(1, b * h * t))
    for start in range(0, s, chunk):
        sl = slice(start, min(s, start + chunk))
        sc = torch.einsum("bngsd,bntd->bngst", qg[:, :, :, sl], kf) * scaling
        bias = position_bias(qpos[:, sl], kpos, window, dt)  # [B, s, T]
        yield sl, softmax_rows(sc + bias[:, None, None])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, q_positions,
              window: int | None = None, *, k_positions=None, key_mask=None,
              chunk: int | None = None) -> torch.Tensor:
    """Per-head attention output [B, H, S, Dh] (float32, differentiable in q)."""
    b, h, s, dh = q.shape
    vf = v.to(torch.promote_types(q.dtype, torch.float32))
    out = [torch.einsum("bngst,bntd->bngsd", p, vf)
           for _, p in attention_chunks(q, k, scaling, q_positions, window, k_positions, key_mask, chunk)]
    return torch.cat(out, dim=3).reshape(b, h, s, v.shape[-1])


def attention_weights(q: torch.Tensor, k: torch.Tensor, scaling: float, q_positions,
                      window: int | None = None, *, k_positions=None, key_mask=None,
                      chunk: int | None = None) -> torch.Tensor:
    """Attention probabilities [B, H, S, T] (float32), masked as in :func:`attention`."""
    b, h, s, _ = q.shape
    parts = [p for _, p in attention_chunks(q, k, scaling, q_positions, window, k_positions, key_mask, chunk)]
    return torch.cat(parts, dim=3).reshape(b, h, s, k.shape[2])


def sdpa_with_lse(q, k, v, bias=None, causal: bool = False):
    """Softmax attention and its log-sum-exp: q [N, KVH, X, Dh] (scaling already in q),
    k, v [N, KVH, T, Dh], additive ``bias`` broadcast to [N, 1, X, T], or ``causal``.
    Returns out [N, KVH, X, Dh] and lse [N, KVH, X, 1]; a row without a visible key gives
    out 0 and lse -inf."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, attn_mask=bias, scale=1.0)
    if bias is None:
        return out, lse[..., None]
    blind = (bias == float("-inf")).all(-1)  # the kernel gives lse 0 there
    return out.nan_to_num(0.0), lse.masked_fill(blind | lse.isnan(), float("-inf"))[..., None]


def merge_lse(o1, lse1, o2, lse2):
    """Attention over two disjoint key sets from each part's output and log-sum-exp."""
    m = torch.maximum(lse1, lse2).clamp(min=torch.finfo(o1.dtype).min)
    w1, w2 = torch.exp(lse1 - m), torch.exp(lse2 - m)
    return (w1 * o1 + w2 * o2) / (w1 + w2).clamp(min=torch.finfo(o1.dtype).tiny)  # no key: 0
