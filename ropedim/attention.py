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

import math
from typing import Iterator

import torch

__all__ = ["position_bias", "key_bias", "softmax_rows", "attention_chunks", "attention",
           "attention_weights", "sdpa_with_lse",
           "cpu_flash_sdpa_with_lse", "merge_lse"]


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


# scores one chunk of :func:`sdpa_with_lse` may hold (float32 elements): cache-sized on a
# CPU; on an accelerator large enough that a chunk is one kernel launch per few hundred rows
_SCORE_ELEMENTS = {"cpu": 1 << 22}
_SCORE_ELEMENTS_ACCELERATOR = 1 << 27
_CAUSAL_CHUNK = 64  # query indices per chunk of a causal call (measured best of 32-256 on a CPU)


def sdpa_with_lse(q, k, v, bias=None, causal: bool = False, scale: float = 1.0, chunk: int | None = None):
    """Softmax attention and its log-sum-exp, on any device, in float32.

    q [N, KVH, *R, S, Dh]: the R query rows of each KV head (GQA groups, mask variants)
    at S query indices; k, v [N, KVH, T, Dh] (K is never repeated per query head); additive
    ``bias`` broadcast to [N, KVH, *R, S, T]; ``causal``: query index s sees key indices
    <= s (S == T). Scores, softmax statistics and outputs are float32 whatever the inputs'
    dtype (bfloat16 K and V are upcast once per call). Chunks of query indices bound
    the memory (``chunk`` indices; default: about ``_SCORE_ELEMENTS`` scores); a causal
    chunk reads only the keys its queries see.

    Returns out [N, KVH, *R, S, Dh] and lse [N, KVH, *R, S, 1], both float32; a row
    without a visible key gives out 0 and lse -inf."""
    if bias is not None and bias.dim() != q.dim():
        raise ValueError(f"bias has {bias.dim()} dims, the query {q.dim()}: give it the query's dims "
                         "(size 1 where it broadcasts)")
    dt = torch.promote_types(q.dtype, torch.float32)
    n, kvh, *rest, s, dh = q.shape
    t, rows = k.shape[2], math.prod(rest)
    if chunk is None:
        budget = _SCORE_ELEMENTS.get(q.device.type, _SCORE_ELEMENTS_ACCELERATOR)
        chunk = max(1, budget // max(1, n * kvh * rows * t))
        if causal:  # short chunks skip most keys a chunk's queries do not see
            chunk = min(chunk, _CAUSAL_CHUNK)
    kt, vf = k.to(dt).transpose(-1, -2), v.to(dt)
    if rows * s >= 64:  # many queries per key: K^T laid out for the matrix product pays for its copy
        kt = kt.contiguous()
    outs, lses = [], []
    for a in range(0, s, chunk):
        b = min(s, a + chunk)
        tk = b if causal else t  # a causal chunk sees keys 0..b-1
        qc = (q[..., a:b, :].to(dt) * scale).reshape(n, kvh, rows * (b - a), dh)
        sc = torch.matmul(qc, kt[..., :tk]).view(n, kvh, *rest, b - a, tk)
        if bias is not None:
            sc += bias[..., a:b, :tk] if bias.shape[-2] > 1 else bias[..., :tk]
        if causal:  # keys a..b-1: each query sees those up to its own index
            sc[..., a:b].masked_fill_(torch.ones(b - a, b - a, dtype=torch.bool, device=q.device).triu_(1),
                                      float("-inf"))
        m = sc.amax(dim=-1, keepdim=True).clamp_(min=torch.finfo(dt).min)  # a row without keys: finite
        p = sc.sub_(m).exp_()  # one exp per score; such a row: exp(-inf) = 0
        total = p.sum(dim=-1, keepdim=True)
        o = torch.matmul(p.view(n, kvh, rows * (b - a), tk), vf[:, :, :tk]).view(n, kvh, *rest, b - a, -1)
        outs.append(o.div_(total.clamp(min=torch.finfo(dt).tiny)))
        lses.append(total.log_().add_(m))  # log 0 = -inf: no visible key
    if len(outs) == 1:
        return outs[0], lses[0]
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-2)


def cpu_flash_sdpa_with_lse(q, k, v, bias=None, causal: bool = False, scale: float = 1.0, chunk=None):
    """Reference for :func:`sdpa_with_lse` (same arguments and results), on the CPU-only
    fused kernel ``aten._scaled_dot_product_flash_attention_for_cpu`` that the fast sweep
    used before it ran on GPUs: K and V repeated per query row group, the bias in the
    query's dtype, scores in the kernel's accumulator. For tests and benchmarks only."""
    if q.device.type != "cpu" or not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        raise RuntimeError("the CPU flash-attention reference needs CPU tensors and torch's CPU kernel")
    n, kvh, *rest, s, dh = q.shape
    r, t = math.prod(rest), k.shape[2]
    qq = q * scale
    if causal:  # as the old kernel: each query head with its own copy of K and V
        qq, k, v = qq.reshape(n, kvh * r, s, dh), k.repeat_interleave(r, 1), v.repeat_interleave(r, 1)
    else:
        qq = qq.reshape(n, kvh, r * s, dh)
        if bias is not None:
            bias = bias.to(q.dtype).expand(n, 1, *rest, s, t).reshape(n, 1, r * s, t)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        qq, k, v, 0.0, causal, attn_mask=bias, scale=1.0)
    if bias is not None:
        blind = (bias == float("-inf")).all(-1)  # the kernel gives lse 0 there
        out, lse = out.nan_to_num(0.0), lse.masked_fill(blind | lse.isnan(), float("-inf"))
    return out.float().view(n, kvh, *rest, s, dh), lse.float().view(n, kvh, *rest, s, 1)


def merge_lse(o1, lse1, o2, lse2):
    """Attention over two disjoint key sets from each part's output and log-sum-exp."""
    m = torch.maximum(lse1, lse2).clamp(min=torch.finfo(o1.dtype).min)
    w1, w2 = torch.exp(lse1 - m), torch.exp(lse2 - m)
    return (w1 * o1 + w2 * o2) / (w1 + w2).clamp(min=torch.finfo(o1.dtype).tiny)  # no key: 0
