"""How far fast masking (from the question on, the context's cache shared) is from the
paper's faithful masking (at every position), on the same questions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import cache
from ..generation import MODES
from ..metrics import best_subspan_em, first_line
from .answers import answer
from .dataset import QASet

__all__ = ["ModeAgreement", "fast_vs_faithful"]


@cache.storable
@dataclass(frozen=True)
class ModeAgreement:
    variant: str  # the mask
    n: int  # questions × positions
    accuracy_fast: float  # %
    accuracy_faithful: float  # %
    same_correctness: float  # share of answers scored alike
    same_answer: float  # share of identical first lines

    def to_json(self) -> dict:
        return asdict(self)


def fast_vs_faithful(loaded, qaset: QASet, masks: dict[str, torch.Tensor], n: int) -> list[ModeAgreement]:
    """Both modes on the first ``n`` kept questions at every position, per masked variant
    (unmasked, the modes are one computation)."""
    got = {m: answer(loaded, qaset, masks, m, n) for m in MODES}
    golds = [g for p in qaset.positions for g in qaset.golds(p)[:n]]
    out = []
    for v in masks:
        fast, faithful = ([a for p in qaset.positions for a in got[m][v][p]] for m in ("fast", "faithful"))
        c = {m: [best_subspan_em(a, g) for a, g in zip(ans, golds)] for m, ans in (("fast", fast), ("faithful", faithful))}
        out.append(ModeAgreement(
            v, len(golds), 100 * float(np.mean(c["fast"])), 100 * float(np.mean(c["faithful"])),
            float(np.mean([a == b for a, b in zip(c["fast"], c["faithful"])])),
            float(np.mean([first_line(a) == first_line(b) for a, b in zip(fast, faithful)]))))
    return out
