"""Retrieval-head indicator score (§5.3).

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

Input: the per-layer :class:`ropedim.capture.LayerCapture` of one forward pass over
the whole example (no cache: keys at positions 0..T-1), q at the question-and-output
rows (or at every position). Only those rows × all keys are computed, never T × T.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .attention import attention_chunks
from .capture import Capture, LayerCapture, in_layer_order, query_positions

__all__ = ["attention_rows", "retrieval_scores", "average_scores", "retrieval_heads"]


def _rows(q: torch.Tensor, q_pos: torch.Tensor, T: int) -> torch.Tensor:
    """q restricted to the rows of q_pos: q already has them, or has all T positions."""
    if q.shape[2] == q_pos.numel():
        return q
    if q.shape[2] == T:
        return q[:, :, q_pos.to(q.device)]
    raise ValueError(f"q has {q.shape[2]} rows; expected len(q_pos)={q_pos.numel()} or T={T}")


def _weights(q, k, q_pos, scaling, window, chunk):
    """(rows, weights [B, H, rows, T]) over chunks of the query rows."""
    b, h = q.shape[:2]
    for rows, w in attention_chunks(q, k, scaling, q_pos, window, chunk=chunk):
        yield rows, w.reshape(b, h, *w.shape[-2:])


def attention_rows(q: torch.Tensor, k: torch.Tensor, q_pos, scaling: float,
                   window: int | None = None, chunk: int = 256) -> torch.Tensor:
    """Attention weights [B, H, S, T] (float32) of the query rows at positions ``q_pos``
    [S]; q [B, H, S or T, Dh], k [B, KVH, T, Dh]."""
    q_pos = query_positions(q_pos)
    q = _rows(q, q_pos, k.shape[2])
    out = q.new_empty((*q.shape[:3], k.shape[2]), dtype=torch.float32)
    for rows, w in _weights(q, k, q_pos, scaling, window, chunk):
        out[:, :, rows] = w
    return out


def retrieval_scores(captures: Capture | Sequence[LayerCapture], q_pos, context_span: tuple[int, int],
                     bos_index: int | None = 0, renormalize: bool = False, chunk: int = 256) -> torch.Tensor:
    """Retrieval-head indicator score [L, H] of one example (§5.3).

    Per head: the attention weight the question-and-output queries (``q_pos``; None: the
    captures' own) put on the context keys ``[start, end)`` minus the weight on
    ``bos_index`` (None: keep all), averaged over those queries and the batch."""
    start, end = context_span
    captures = in_layer_order(captures)
    q_pos = query_positions(q_pos, captures)
    scores = []
    for cap in captures:
        q = _rows(cap.q, q_pos, cap.k.shape[2])
        total = torch.zeros(q.shape[1], dtype=torch.float64, device="cpu")  # scores are returned on the CPU
        for _, w in _weights(q, cap.k, q_pos, cap.scaling, cap.window, chunk):
            ctx = w[..., start:end].sum(-1)  # [B, H, rows]
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
