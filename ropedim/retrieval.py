"""Retrieval-head indicator score (§5.3) and the attention rows it is read from.

The paper: "for each head, we measure the sum of the attention weight between the
context part (instruction and documents) and the question-output part and use the sum
as a retrieval-head indication score." Footnote 2: "We ignore the attention weight on
the begin-of-string token because Xiao et al. (2024b) suggest that models tend to use
it as an sinkhole." Retrieval heads are those with score > 0.5 (§5.4, Table 2).

Our reading: for every query position in the question-and-output part, sum its
attention weights over the keys of the context span ``[start, end)`` leaving out the BOS
key; average over those query positions (and the batch), then over examples. A score is
in [0, 1]. By default the BOS weight is dropped, not renormalised away
(``renormalize=True`` divides by ``1 - weight on BOS`` instead).

Captures: a sequence of per-layer records, or a mapping layer -> record (as
``ropedim.hooks.capture`` yields); a record is a dict or an object with attributes, after
RoPE: ``q`` [B, H, Tq, Dh] at the absolute positions ``q_pos`` ([Tq], or [B, Tq] equal
over B) or [B, H, T, Dh] for all positions, ``k`` / ``v`` [B, KVH, T, Dh] at positions
0..T-1 (a full forward pass, no cache), ``scaling`` (float), ``window`` (int or None:
position p sees keys in (p - window, p]). GQA: head h reads KV head h // (H // KVH).
Only the needed rows (queries × all keys) are computed, never T × T.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch

__all__ = [
    "attention_rows",
    "field",
    "layers",
    "positions",
    "key_bias",
    "position_bias",
    "retrieval_scores",
    "average_scores",
    "retrieval_heads",
]


def field(cap: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a capture record (mapping or attribute object)."""
    if isinstance(cap, dict):
        return cap.get(name, default)
    return getattr(cap, name, default)


def layers(captures: Sequence[Any] | Mapping[int, Any]) -> list[Any]:
    """Per-layer records in layer order (a mapping such as ``hooks.Capture`` is sorted)."""
    if isinstance(captures, Mapping):
        return [captures[i] for i in sorted(captures)]
    return list(captures)


def positions(q_pos: Any, captures: Sequence[Any] | None = None) -> torch.Tensor:
    """Query positions as a LongTensor [Tq]; None reads ``q_pos`` of the first capture;
    [B, Tq] must be equal over the batch."""
    if q_pos is None:
        q_pos = field(captures[0], "q_pos")
    q_pos = torch.as_tensor(q_pos, dtype=torch.long)
    if q_pos.dim() == 2:
        if not bool((q_pos == q_pos[:1]).all()):
            raise ValueError("query positions differ across the batch")
        q_pos = q_pos[0]
    return q_pos


def position_bias(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [..., Tq, T]: 0 where the query at position p sees the key at position j
    (j <= p, j > p - window; j = -1 marks padding), -inf elsewhere."""
    p, j = q_pos[..., :, None], k_pos.to(q_pos.device)[..., None, :]
    ok = (j >= 0) & (j <= p)
    if window is not None:
        ok &= j > p - window
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill_(~ok, float("-inf"))


def key_bias(q_pos: torch.Tensor, T: int, window: int | None = None) -> torch.Tensor:
    """Additive mask [Tq, T] over keys 0..T-1 (see :func:`position_bias`)."""
    return position_bias(q_pos, torch.arange(T, device=q_pos.device), window)


def _row_chunks(
    q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, scaling: float,
    window: int | None, chunk: int,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, weights [B, H, rows, T] float32) over chunks of query rows; the
    kernel is ``ropedim.hooks.attention_chunks`` (GQA without repeating K)."""
    from .hooks import attention_chunks
    B, H, Tq, _ = q.shape
    if H % k.shape[1]:
        raise ValueError(f"{H} query heads do not split over {k.shape[1]} KV heads")
    if q_pos.numel() != Tq:
        raise ValueError(f"q has {Tq} rows but q_pos has {q_pos.numel()}")
    for rows, w in attention_chunks(q, k, scaling, q_pos, window, None, None, chunk):
        yield rows, w.reshape(B, H, *w.shape[-2:])


def _query_rows(q: torch.Tensor, q_pos: torch.Tensor, T: int) -> torch.Tensor:
    """q restricted to the rows of q_pos: q already has them, or has all T positions."""
    if q.shape[2] == q_pos.numel():
        return q
    if q.shape[2] == T:
        return q[:, :, q_pos.to(q.device)]
    raise ValueError(f"q has {q.shape[2]} rows; expected len(q_pos)={q_pos.numel()} or T={T}")


def attention_rows(
    q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, scaling: float,
    window: int | None = None, chunk: int = 256,
) -> torch.Tensor:
    """Causal (optionally sliding-window) softmax attention weights of the given query rows.

    q [B, H, Tq, Dh] at absolute positions q_pos [Tq]; k [B, KVH, T, Dh] (GQA shared).
    Returns float32 weights [B, H, Tq, T]; computed ``chunk`` rows at a time.
    """
    q_pos = positions(q_pos)
    q = _query_rows(q, q_pos, k.shape[2])
    out = q.new_empty((*q.shape[:3], k.shape[2]), dtype=torch.float32)
    for rows, w in _row_chunks(q, k, q_pos, scaling, window, chunk):
        out[:, :, rows] = w
    return out


def retrieval_scores(
    captures: Sequence[Any] | Mapping[int, Any], q_pos: Any, context_span: tuple[int, int],
    bos_index: int | None = 0, renormalize: bool = False, chunk: int = 256,
) -> torch.Tensor:
    """Retrieval-head indicator score [L, H] of one example (§5.3).

    Per head: the attention weight the question-and-output queries (``q_pos``) put on
    the context keys ``[start, end)`` minus the weight on ``bos_index`` (None: keep all),
    averaged over those queries and the batch. ``q_pos`` None: the captures' own.
    """
    start, end = context_span
    captures = layers(captures)
    q_pos = positions(q_pos, captures)
    scores = []
    for cap in captures:
        k = field(cap, "k")
        q = _query_rows(field(cap, "q"), q_pos, k.shape[2])
        total = torch.zeros(q.shape[1], dtype=torch.float64)
        for _, w in _row_chunks(q, k, q_pos, field(cap, "scaling"), field(cap, "window"), chunk):
            ctx = w[..., start:end].sum(-1)  # [B, H, t]
            if bos_index is not None:
                bos = w[..., bos_index]
                if start <= bos_index < end:
                    ctx = ctx - bos
                if renormalize:
                    ctx = ctx / (1 - bos).clamp_min(1e-12)
            total += ctx.sum((0, 2)).double().cpu()
        scores.append(total / (q.shape[0] * q.shape[2]))
    return torch.stack(scores).float()  # [L, H]


def average_scores(per_example: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of per-example scores [L, H] over examples (each example weighs the same)."""
    return torch.stack(list(per_example)).mean(0)


def retrieval_heads(scores: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """(layer, head) pairs with score > threshold (the paper: 0.5)."""
    return [tuple(map(int, lh)) for lh in (scores > threshold).nonzero().tolist()]
