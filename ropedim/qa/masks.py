"""The query masks of §5: every mask rule lives here.

- §5.2, Table 1: mask every query dim whose utility score (Eq. 4) is below 0.5, in every
  head ("masking the dimensions with low utility scores").
- §5.4, Table 2: in the retrieval heads (score > 0.5), mask "the first/last 16 (32)
  dimensions", in θ order (highest frequency first; whole rotary pairs). The paper's 16
  of 128 is a fraction of the head (1/8; 32 of 128: 1/4), scaled to the model's head size.

A mask is a frozen record whose arguments (thresholds, fractions) are stated in the claims
table (``claims/checks.py``); it builds the [L, H, Dh] tensor (1 = keep, storage order)
from the model's anatomy and its head scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch

from ..anatomy import Anatomy
from ..hooks import BeforeRoPE
from ..retrieval import retrieval_heads
from ..rope import dims_in_fraction, first_last_mask
from ..utility import PRIMARY, READINGS

__all__ = ["QueryMask", "Unmasked", "LowUtility", "RetrievalHeadDims", "theta_end_mask", "utility_mask"]


def theta_end_mask(anatomy: Anatomy, which: str, k: int, heads: Iterable[tuple[int, int]]) -> torch.Tensor:
    """[L, H, Dh] float mask zeroing the first/last ``k`` coordinates in the paper's order
    (θ from high to low; "the first 16 dimensions" = the 8 highest-frequency pairs) of each
    (layer, head) in ``heads``; other heads are all ones. ``k`` counts coordinates."""
    a = anatomy
    mask = torch.ones(a.n_layers, a.n_heads, a.head_dim, device="cpu")  # masks move with the query (hooks.masked)
    for layer, head in heads:
        mask[layer, head, first_last_mask(a.rank[layer], which, k)] = 0.0
    return mask


def utility_mask(u: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """§5.2: keep dimensions whose utility score is >= threshold, mask those below."""
    return (torch.as_tensor(u) >= threshold).to(torch.float32)


@dataclass(frozen=True)
class QueryMask:
    name: str

    def build(self, anatomy: Anatomy, scores) -> torch.Tensor | BeforeRoPE | None:
        """The [L, H, Dh] mask (None: unmasked); ``scores``: ``ropedim.qa.analysis.HeadScores``
        of ``self.reading``."""
        raise NotImplementedError

    @property
    def needs_scores(self) -> bool:
        return False

    @property
    def reading(self) -> str:
        return PRIMARY

    def spec(self) -> dict:
        return {"type": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class Unmasked(QueryMask):
    name: str = "none"

    def build(self, anatomy, scores):
        return None


@dataclass(frozen=True)
class LowUtility(QueryMask):
    """§5.2, Table 1: every head, dims with u < ``threshold`` (u of Eq. 4 under
    ``utility_reading``), applied where that reading puts u: before or after RoPE."""

    name: str = "utility"
    threshold: float = 0.5
    utility_reading: str = PRIMARY

    @property
    def needs_scores(self) -> bool:
        return True

    @property
    def reading(self) -> str:
        return self.utility_reading

    def build(self, anatomy, scores):
        m = utility_mask(scores.utility, self.threshold)
        return BeforeRoPE(m) if READINGS[self.utility_reading].site == "pre" else m

    def share_masked(self, scores) -> float:
        """Share of all query dims this mask removes."""
        return float((scores.utility < self.threshold).float().mean())


@dataclass(frozen=True)
class RetrievalHeadDims(QueryMask):
    """§5.4, Table 2: the first/last ``fraction`` of each retrieval head's dims."""

    name: str = "first16"
    which: str = "first"
    fraction: float = 1 / 8
    retrieval_threshold: float = 0.5

    @property
    def needs_scores(self) -> bool:
        return True

    def heads(self, scores) -> list[tuple[int, int]]:
        return retrieval_heads(scores.retrieval, self.retrieval_threshold)

    def build(self, anatomy, scores):
        k = dims_in_fraction(anatomy.head_dim, self.fraction)
        return theta_end_mask(anatomy, self.which, k, self.heads(scores))
