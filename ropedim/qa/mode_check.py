"""How far fast masking (from the question on, the context's cache shared) is from the
paper's faithful masking (at every position), on the same questions: per mask, the
paired change in accuracy faithful − fast with its interval (questions as the unit,
``ropedim.stats.paired_proportion_difference``) and the share of identical answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import cache, stats
from ..generation import MODES
from ..metrics import best_subspan_em, first_line
from .answers import answer
from .dataset import QASet

__all__ = ["ModeAgreement", "fast_vs_faithful"]


@cache.storable
@dataclass(frozen=True)
class ModeAgreement:
    variant: str  # the mask
    questions: int  # questions compared, each at every gold position
    accuracy_fast: float  # %
    accuracy_faithful: float  # %
    difference: float  # faithful − fast, points
    low: float  # its interval
    high: float
    same_correctness: float  # share of (question, position) pairs scored alike
    same_answer: float  # share of identical first lines

    def to_json(self) -> dict:
        return asdict(self)

    def within(self, tolerance: float) -> bool:
        """The interval of faithful − fast lies inside ±tolerance points."""
        return -tolerance <= self.low and self.high <= tolerance


def fast_vs_faithful(loaded, qaset: QASet, masks: dict[str, torch.Tensor], n: int | None) -> list[ModeAgreement]:
    """Both modes on the first ``n`` kept questions (all: None) at every position, per
    masked variant (unmasked, the modes are one computation)."""
    got = {m: answer(loaded, qaset, masks, m, n) for m in MODES}
    golds = [qaset.golds(p)[:n] for p in qaset.positions]
    out = []
    for v in masks:
        ans = {m: [got[m][v][p] for p in qaset.positions] for m in MODES}  # [positions][questions]
        c = {m: np.array([[best_subspan_em(a, g) for a, g in zip(row, gs)] for row, gs in zip(ans[m], golds)]).T
             for m in MODES}  # [questions, positions]
        d = stats.paired_proportion_difference(c["fast"], c["faithful"])
        same = [first_line(a) == first_line(b) for ra, rb in zip(ans["fast"], ans["faithful"]) for a, b in zip(ra, rb)]
        out.append(ModeAgreement(v, c["fast"].shape[0], 100 * float(c["fast"].mean()), 100 * float(c["faithful"].mean()),
                                 100 * d.value, 100 * d.low, 100 * d.high, float((c["fast"] == c["faithful"]).mean()),
                                 float(np.mean(same))))
    return out
