"""Rotary position embedding (§2, Eq. 1-2) and the one dimension convention of ropedim.

THE CONVENTION. A head of ``2D`` dimensions has ``D`` rotary pairs with frequencies
θ_1 > θ_2 > … > θ_D. The paper (footnote 1, §3) orders dimensions "by the magnitude of
θ, from greater to smaller"; so do we. The *θ rank* of a pair is its position in that
order (0 = highest frequency). In the *paper layout* pair ``r`` occupies coordinates
``2r`` and ``2r + 1``, so "the first 16 dimensions" are coordinates 0-15 (pairs 0-7).

Storage layouts map onto it:
- half-split (Hugging Face ``rotate_half``): storage index ``j`` and ``j + D`` form
  pair ``j``; its θ is ``inv_freq[j]``;
- interleaved (original RoPE / GPT-J): storage ``2j`` and ``2j + 1`` form pair ``j``;
- partial rotary: only the first ``rotary_dim`` storage indices rotate; the rest have
  θ = 0 and rank after every rotating pair;
- scaled θ (llama3, YaRN) and per-layer bases (Gemma 3): θ is read from the model's
  ``inv_freq``, never recomputed; ranks follow the θ actually used.

Frequencies are float32, as in ``modeling_llama.py``.
"""

from __future__ import annotations

import torch

__all__ = [
    "inv_freq",
    "rotate",
    "rotate_half",
    "apply_half_split",
    "storage_cos_sin",
    "rotate_storage",
    "pair_partner",
    "theta_rank_of_storage",
    "storage_order",
    "PAPER_HEAD_DIM",
    "paper_masks",
    "dims_in_fraction",
    "first_last_mask",
]


def inv_freq(dim: int, base: float = 10000.0) -> torch.Tensor:
    """θ_i = base^(-2(i-1)/dim) for the dim/2 pairs, highest first (LLaMA's config)."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"RoPE needs a positive even number of dimensions, got {dim}")
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


def rotate(x: torch.Tensor, pos: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Eq. 1 in the paper layout: rotate pair r = (x[2r], x[2r+1]) by pos·θ_r.

    x: [..., 2D]; pos: broadcastable to x[..., 0]; theta: [D] (float32).
    """
    angle = pos.to(torch.float32)[..., None] * theta  # [..., D]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Hugging Face's helper: (x1, x2) -> (-x2, x1) over the two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_half_split(x: torch.Tensor, pos: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Eq. 1 in the half-split storage layout (storage j pairs with j + D)."""
    angle = pos.to(torch.float32)[..., None] * theta
    emb = torch.cat((angle, angle), dim=-1)
    return x * emb.cos().to(x.dtype) + rotate_half(x) * emb.sin().to(x.dtype)


def storage_cos_sin(theta: torch.Tensor, pos: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [..., head_dim] of a half-split head with ``theta`` [rotary_dim / 2] at
    positions ``pos`` [...]; dims beyond the rotary part (partial rotary) have cos 1, sin 0."""
    angle = pos.to(torch.float32)[..., None] * theta.to(pos.device)  # [..., n]
    extra = head_dim - 2 * theta.numel()
    ones = angle.new_ones(*angle.shape[:-1], extra)
    cos = torch.cat((angle.cos(), angle.cos(), ones), dim=-1)
    sin = torch.cat((angle.sin(), angle.sin(), ones * 0), dim=-1)
    return cos, sin


def rotate_storage(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int,
                   inverse: bool = False) -> torch.Tensor:
    """Eq. 1 on a half-split head (partial rotary too): rotate each pair by its angle, or by
    minus it (``inverse``); ``cos``, ``sin`` from :func:`storage_cos_sin`."""
    rot = torch.cat((rotate_half(x[..., :rotary_dim]), torch.zeros_like(x[..., rotary_dim:])), dim=-1)
    return x * cos - rot * sin if inverse else x * cos + rot * sin


def pair_partner(head_dim: int, rotary_dim: int, device=None) -> torch.Tensor:
    """The storage index rotating with each index of a half-split head [head_dim] (j with
    j + rotary_dim / 2); dims beyond the rotary part are their own partner."""
    n = rotary_dim // 2
    idx = torch.arange(head_dim, device=device)
    idx[:n], idx[n:rotary_dim] = torch.arange(n, rotary_dim, device=device), torch.arange(n, device=device)
    return idx


def theta_rank_of_storage(theta: torch.Tensor, head_dim: int, layout: str = "half") -> torch.Tensor:
    """θ rank (0 = highest frequency) of every storage index of a head.

    theta: [rotary_dim / 2], the frequency of each pair in storage order (``inv_freq``).
    Storage indices beyond the rotary part (partial rotary) get θ = 0 and the last ranks.
    """
    n_pairs = theta.numel()
    rotary_dim = 2 * n_pairs
    if rotary_dim > head_dim:
        raise ValueError(f"{n_pairs} rotary pairs do not fit a head of {head_dim} dims")
    # stable sort: equal θ keep storage order; non-rotating dims come last
    pair_rank = torch.empty(n_pairs, dtype=torch.long)
    pair_rank[torch.argsort(-theta.to(torch.float32), stable=True)] = torch.arange(n_pairs)
    rank = torch.empty(head_dim, dtype=torch.long)
    if layout == "half":
        rank[:n_pairs] = pair_rank
        rank[n_pairs:rotary_dim] = pair_rank
    elif layout == "interleaved":
        rank[0:rotary_dim:2] = pair_rank
        rank[1:rotary_dim:2] = pair_rank
    else:
        raise ValueError(f"unknown RoPE layout {layout!r}; use 'half' or 'interleaved'")
    n_extra = head_dim - rotary_dim
    if n_extra % 2:
        raise ValueError(f"head_dim {head_dim} minus rotary_dim {rotary_dim} must be even")
    # the non-rotating tail pairs up consecutively after all rotating pairs
    rank[rotary_dim:] = n_pairs + torch.arange(n_extra) // 2
    return rank


def storage_order(rank: torch.Tensor) -> torch.Tensor:
    """Storage indices sorted into the paper layout (θ rank, then storage order).

    ``x[..., storage_order(rank)]`` lists a head's coordinates as the paper counts them.
    """
    return torch.argsort(rank, stable=True)


PAPER_HEAD_DIM = 128  # the head size of the paper's three models: its "first 16 dimensions" are of 128


def paper_masks(head_dim: int) -> str:
    """How the paper's first/last 16 (32) dims read on a head of ``head_dim``: literally on
    128-dim heads, as the same fraction (1/8, 1/4) of another head size."""
    return "literal (128-dim heads)" if head_dim == PAPER_HEAD_DIM else f"fraction of {head_dim}-dim heads"


def dims_in_fraction(head_dim: int, fraction: float) -> int:
    """Coordinates in a fraction of a head, in whole rotary pairs: the paper's 16 of 128
    is 1/8, so 8 of a 64-dim head and 32 of a 256-dim head."""
    return max(2, 2 * round(head_dim * fraction / 2))


def first_last_mask(rank: torch.Tensor, which: str, k: int) -> torch.Tensor:
    """Boolean mask over storage indices: True where a dim is among the first/last ``k``
    dims in the paper's order (``k`` counts coordinates, so k=16 is 8 pairs)."""
    head_dim = rank.numel()
    if not 0 <= k <= head_dim or k % 2:
        raise ValueError(f"k must be an even number in [0, {head_dim}], got {k}")
    paper_pos = torch.empty(head_dim, dtype=torch.long, device=rank.device)
    paper_pos[storage_order(rank)] = torch.arange(head_dim, device=rank.device)
    if which == "first":
        return paper_pos < k
    if which == "last":
        return paper_pos >= head_dim - k
    raise ValueError(f"which must be 'first' or 'last', got {which!r}")
