"""Claim C5a (§5, Fig. 2a and 5): "the L1 norm of the rows of W_q increases with the
dimension index", dims ordered by θ from high to low (§3, footnote 1).

Row ``j`` of head ``h``'s block of ``q_proj.weight`` [H·Dh, d_model] produces query
coordinate ``j`` (storage order). For OLMo 2 and Gemma 3 the query is normalised before
RoPE (q_norm), so the row norm alone is not the effective per-dimension scale; the
``scaled`` variant multiplies by |q norm gain| (for OLMo 2 the norm's RMS is over all
heads at once, so this is a per-dimension gain, not an exact scale).

GGUF note: llama.cpp stores q/k rows of llama models permuted to its interleaved RoPE
layout; transformers' GGUF loader (``LlamaTensorProcessor._reverse_permute_weights``)
undoes it, so smollm2's ``q_proj`` is in HF's half-split layout (storage j pairs with
j + Dh/2). Checked end to end: the loaded model answers "What is the capital of France?"
with "The capital of France is Paris." (tests/test_weights.py), which a mis-paired RoPE
would not allow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from .anatomy import Anatomy, anatomy_of, attention_modules
from .rope import storage_order

__all__ = ["WqNorms", "wq_row_l1", "to_paper_order", "spearman_with_rank", "wq_norms"]


@dataclass
class WqNorms:
    storage: torch.Tensor  # [L, H, Dh] row L1 norm, storage order
    paper: torch.Tensor  # [L, H, Dh] the same in the paper's order (θ rank ascending)
    spearman: torch.Tensor  # [L, H] Spearman(θ rank, row L1) per head; > 0: claim's direction
    scaled_storage: torch.Tensor | None  # × |q norm gain| (q/k-norm models), else None
    scaled_paper: torch.Tensor | None
    scaled_spearman: torch.Tensor | None

    def mean_by_dim(self, scaled: bool = False) -> torch.Tensor:
        """[Dh] average over layers and heads in the paper's order (the curve of Fig. 2a)."""
        x = self.scaled_paper if scaled else self.paper
        return x.mean(dim=(0, 1))


def wq_row_l1(model) -> torch.Tensor:
    """L1 norm of each row of W_q, [L, H, Dh] in storage order."""
    out = []
    for attn in attention_modules(model):
        w = attn.q_proj.weight.detach().float()  # [H*Dh, d_model]
        out.append(w.abs().sum(-1).view(-1, attn.head_dim).cpu())
    return torch.stack(out)


def to_paper_order(x: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """x [L, H, Dh] (storage order) -> the paper's order, using ``rank`` [L, Dh]."""
    idx = torch.stack([storage_order(r) for r in rank])  # [L, Dh]
    return torch.gather(x, -1, idx[:, None, :].expand_as(x).to(x.device))


def spearman_with_rank(values: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Spearman correlation (average ranks for ties, e.g. the two coordinates of a pair)
    between θ rank [L, Dh] and ``values`` [L, H, Dh], per head -> [L, H]."""
    v = values.double().numpy()
    r = np.broadcast_to(rank.double().numpy()[:, None, :], v.shape)
    a, b = rankdata(v, axis=-1), rankdata(r, axis=-1)
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return torch.from_numpy((a * b).sum(-1) / np.where(den > 0, den, np.nan)).float()


def wq_norms(model, anatomy: Anatomy | None = None) -> WqNorms:
    a = anatomy or anatomy_of(model)
    rows = wq_row_l1(model)
    scaled = rows * a.q_norm_scale.abs() if a.q_norm_scale is not None else None
    return WqNorms(
        storage=rows, paper=to_paper_order(rows, a.rank), spearman=spearman_with_rank(rows, a.rank),
        scaled_storage=scaled,
        scaled_paper=None if scaled is None else to_paper_order(scaled, a.rank),
        scaled_spearman=None if scaled is None else spearman_with_rank(scaled, a.rank))
