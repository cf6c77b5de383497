"""The capture record: what one attention layer saw in a forward pass.

``ropedim.hooks.capture`` fills one :class:`LayerCapture` per layer; the §5.3 retrieval
score and Eq. 4 read them. Shapes: B batch, H query heads, KVH key/value heads, S kept
query positions, T keys, Dh head dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from .attention import attention

__all__ = ["LayerCapture", "Capture", "query_positions", "in_layer_order"]


@dataclass
class LayerCapture:
    q: torch.Tensor | None = None  # [B, H, S, Dh] post-RoPE query, as attention used it (after any mask)
    k: torch.Tensor | None = None  # [B, KVH, T, Dh] post-RoPE
    v: torch.Tensor | None = None  # [B, KVH, T, Dh]
    q_pre: torch.Tensor | None = None  # [B, H, S, Dh] query before RoPE (after the q norm)
    o: torch.Tensor | None = None  # [B, H, S, Dh] each head's attention output
    q_pos: torch.Tensor | None = None  # [B, S] or [S]: position id of each kept query
    q_idx: torch.Tensor | None = None  # [S] key index of each kept query (its causal horizon)
    scaling: float = 1.0  # softmax scale on q·k
    window: int | None = None  # sliding window: the query at p sees keys in (p - window, p]

    def attention(self, **kw) -> torch.Tensor:
        """Recompute each head's output [B, H, S, Dh] from the captured q, K, V."""
        return attention(self.q, self.k, self.v, self.scaling, self.q_idx, self.window, **kw)


class Capture(dict):
    """``capture[layer]`` -> :class:`LayerCapture` of the last forward pass."""

    def attention(self, layer: int, **kw) -> torch.Tensor:
        return self[layer].attention(**kw)


def in_layer_order(captures: Capture | Iterable[LayerCapture]) -> list[LayerCapture]:
    """Per-layer records in layer order (a :class:`Capture` is sorted by layer)."""
    if isinstance(captures, dict):
        return [captures[i] for i in sorted(captures)]
    return list(captures)


def query_positions(q_pos, captures: list[LayerCapture] | None = None) -> torch.Tensor:
    """Query positions as a LongTensor [S]; None reads the first capture's own; [B, S]
    must be equal over the batch."""
    if q_pos is None:
        q_pos = captures[0].q_pos
    q_pos = torch.as_tensor(q_pos, dtype=torch.long)
    if q_pos.dim() == 2:
        if not bool((q_pos == q_pos[:1]).all()):
            raise ValueError("query positions differ across the batch")
        q_pos = q_pos[0]
    return q_pos
