"""From an estimate with an interval to a verdict.

A criterion says which side of a threshold the claim puts the statistic on:
- ``greater``: supported when the whole interval lies above the threshold, not supported
  when it lies at or below it, inconclusive when the interval straddles it;
- ``less``: the mirror image;
- ``within``: an equivalence test; supported when the interval lies inside
  [low, high], not supported when it lies wholly outside, inconclusive otherwise.
A verdict can also be forced to ``inconclusive`` by a precondition (a model that
answers almost nothing cannot show that masking keeps its accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

from .stats import Estimate

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, SKIPPED = "supported", "not supported", "inconclusive", "skipped"
OUTCOMES = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
ARROW = {"greater": "↑", "less": "↓", "within": "≈"}


@dataclass(frozen=True)
class Criterion:
    kind: str  # "greater" | "less" | "within"
    threshold: float | tuple[float, float]
    source: str = ""  # where the tolerance comes from: "the paper: ...", "null of ...", "our choice, because ..."

    def __post_init__(self):
        if self.kind not in ARROW:
            raise ValueError(f"criterion kind must be one of {sorted(ARROW)}, got {self.kind!r}")
        if (self.kind == "within") != isinstance(self.threshold, tuple):
            raise ValueError("'within' takes a (low, high) band; 'greater'/'less' a number")

    def describe(self) -> str:
        """The one formatter: arrow (↑ above, ↓ below, ≈ inside a band) and threshold."""
        if self.kind == "within":
            lo, hi = self.threshold
            return f"≈ within [{lo:g}, {hi:g}]"
        return f"{ARROW[self.kind]} {'>' if self.kind == 'greater' else '<'} {self.threshold:g}"

    def to_json(self) -> dict:
        t = list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold
        return {"kind": self.kind, "threshold": t, "source": self.source}

    @classmethod
    def from_json(cls, d: dict) -> "Criterion":
        t = d["threshold"]
        return cls(d["kind"], tuple(t) if isinstance(t, list) else t, d.get("source", ""))


@dataclass(frozen=True)
class Verdict:
    outcome: str
    reason: str


def judge(est: Estimate, crit: Criterion, precondition: str | None = None) -> Verdict:
    """Compare an interval with a criterion; a failed precondition (``precondition`` or the
    estimate's own) forces ``inconclusive``."""
    precondition = precondition or est.precondition
    lo, hi = est.low, est.high
    ci = f"{est.value:.3g} [{lo:.3g}, {hi:.3g}]"
    if precondition:
        return Verdict(INCONCLUSIVE, precondition)
    if any(x != x for x in (lo, hi, est.value)):  # NaN
        return Verdict(INCONCLUSIVE, f"the statistic is undefined here ({ci})")
    if crit.kind == "greater":
        t = crit.threshold
        if lo > t:
            return Verdict(SUPPORTED, f"{ci} lies above {t:g}")
        if hi <= t:
            return Verdict(NOT_SUPPORTED, f"{ci} lies at or below {t:g}")
        return Verdict(INCONCLUSIVE, f"{ci} straddles {t:g}")
    if crit.kind == "less":
        t = crit.threshold
        if hi < t:
            return Verdict(SUPPORTED, f"{ci} lies below {t:g}")
        if lo >= t:
            return Verdict(NOT_SUPPORTED, f"{ci} lies at or above {t:g}")
        return Verdict(INCONCLUSIVE, f"{ci} straddles {t:g}")
    band_lo, band_hi = crit.threshold
    if band_lo <= lo and hi <= band_hi:
        return Verdict(SUPPORTED, f"{ci} lies inside [{band_lo:g}, {band_hi:g}]")
    if hi < band_lo or lo > band_hi:
        return Verdict(NOT_SUPPORTED, f"{ci} lies outside [{band_lo:g}, {band_hi:g}]")
    return Verdict(INCONCLUSIVE, f"{ci} overlaps the edge of [{band_lo:g}, {band_hi:g}]")
