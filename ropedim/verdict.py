"""From an estimate with an interval to a verdict.

A criterion says which side of a threshold the claim puts the statistic on:
- ``greater``: supported when the whole interval lies above the threshold, not supported
  when it lies at or below it, inconclusive when the interval straddles it;
- ``less``: the mirror image;
- ``within``: an equivalence test; supported when the interval lies inside
  [low, high], not supported when it lies wholly outside, inconclusive otherwise.
A threshold is a number, or ``NULL99``: the 99th percentile of the statistic under its
null (no effect), computed by the measure for the subject at hand.

"Inconclusive" says why (``Verdict.cause``): a failed precondition (a model that answers
almost nothing cannot show that masking keeps its accuracy), an undefined statistic, too
few units (``underpowered``, with the n that would decide it at the same effect and
spread), or an estimate too close to the bar for any affordable n (``near the threshold``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .stats import Estimate

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, SKIPPED = "supported", "not supported", "inconclusive", "skipped"
OUTCOMES = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
ARROW = {"greater": "↑", "less": "↓", "within": "≈"}


NULL99 = "null99"  # a threshold: the null's 99th percentile (Estimate.null[0.99])
NEAR = 10.0  # the interval is more than this many times wider than the distance to the bar: "near the threshold"


@dataclass(frozen=True)
class Criterion:
    kind: str  # "greater" | "less" | "within"
    threshold: float | tuple[float, float] | str  # a number, a (low, high) band, or NULL99
    source: str = ""  # where the tolerance comes from: "the paper: ...", "null of ...", "our choice, because ..."

    def __post_init__(self):
        if self.kind not in ARROW:
            raise ValueError(f"criterion kind must be one of {sorted(ARROW)}, got {self.kind!r}")
        if (self.kind == "within") != isinstance(self.threshold, tuple):
            raise ValueError("'within' takes a (low, high) band; 'greater'/'less' a number or NULL99")
        if isinstance(self.threshold, str) and self.threshold != NULL99:
            raise ValueError(f"a threshold given by name must be {NULL99!r}, got {self.threshold!r}")

    def resolve(self, est: Estimate) -> "Criterion":
        """The criterion with a null threshold replaced by the estimate's null quantile."""
        if self.threshold != NULL99:
            return self
        if 0.99 not in est.null:
            raise ValueError("a null99 threshold needs the measure's null quantiles (Estimate.null[0.99])")
        return Criterion(self.kind, float(est.null[0.99]), self.source)

    def describe(self) -> str:
        """The one formatter: arrow (↑ above, ↓ below, ≈ inside a band) and threshold."""
        if self.kind == "within":
            lo, hi = self.threshold
            return f"≈ within [{lo:g}, {hi:g}]"
        t = "null's 99th pct" if self.threshold == NULL99 else f"{self.threshold:g}"
        return f"{ARROW[self.kind]} {'>' if self.kind == 'greater' else '<'} {t}"

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
    cause: str | None = None  # inconclusive: "precondition" | "undefined" | "underpowered" | "near the threshold"
    n_needed: int | None = None  # underpowered: the n (Estimate.unit) that would decide it, same effect and spread
    threshold: float | tuple | None = None  # the bar it was judged against (a null's value resolved)

    def to_json(self) -> dict:
        return {"cause": self.cause, "n_needed": self.n_needed, "threshold": self.threshold}


def _straddles(est: Estimate, ci: str, bar: float, what: str) -> Verdict:
    """Inconclusive: the interval reaches ``bar``. Underpowered, or near the threshold. The n
    that would decide it scales the interval's side that faces the bar (a bootstrap interval
    can be skewed: the whole width's half could be narrower than the distance it must clear)."""
    hw = est.high - est.value if est.value < bar else est.value - est.low  # the side that reaches the bar
    dist = abs(est.value - bar)
    if dist == 0 or hw / dist > NEAR or not est.n:
        return Verdict(INCONCLUSIVE, f"{ci} {what} {bar:g}; the estimate is too close to the bar to decide",
                       "near the threshold")
    n = max(est.n + 1, math.ceil(est.n * (hw / dist) ** 2))  # an interval that just touches the bar: one more
    unit = f" {est.unit}" if est.unit else ""
    return Verdict(INCONCLUSIVE, f"{ci} {what} {bar:g}; underpowered: about {n}{unit} would decide it "
                                 f"(now {est.n})", "underpowered", n)


def judge(est: Estimate, crit: Criterion, precondition: str | None = None) -> Verdict:
    """Compare an interval with a criterion; a failed precondition (``precondition`` or the
    estimate's own) forces ``inconclusive``."""
    precondition = precondition or est.precondition
    crit = crit.resolve(est)
    lo, hi = est.low, est.high
    ci = f"{est.value:.3g} [{lo:.3g}, {hi:.3g}]"
    t = crit.threshold
    if precondition:
        return Verdict(INCONCLUSIVE, precondition, "precondition", threshold=t)
    if any(x != x for x in (lo, hi, est.value)):  # NaN
        return Verdict(INCONCLUSIVE, f"the statistic is undefined here ({ci})", "undefined", threshold=t)
    if crit.kind == "greater":
        if lo > t:
            return Verdict(SUPPORTED, f"{ci} lies above {t:g}", threshold=t)
        if hi <= t:
            return Verdict(NOT_SUPPORTED, f"{ci} lies at or below {t:g}", threshold=t)
        return _with_threshold(_straddles(est, ci, t, "straddles"), t)
    if crit.kind == "less":
        if hi < t:
            return Verdict(SUPPORTED, f"{ci} lies below {t:g}", threshold=t)
        if lo >= t:
            return Verdict(NOT_SUPPORTED, f"{ci} lies at or above {t:g}", threshold=t)
        return _with_threshold(_straddles(est, ci, t, "straddles"), t)
    band_lo, band_hi = t
    if band_lo <= lo and hi <= band_hi:
        return Verdict(SUPPORTED, f"{ci} lies inside [{band_lo:g}, {band_hi:g}]", threshold=list(t))
    if hi < band_lo or lo > band_hi:
        return Verdict(NOT_SUPPORTED, f"{ci} lies outside [{band_lo:g}, {band_hi:g}]", threshold=list(t))
    edge = band_lo if lo < band_lo else band_hi  # the edge the interval crosses
    return _with_threshold(_straddles(est, ci, edge, "crosses the band's edge"), list(t))


def _with_threshold(v: Verdict, t) -> Verdict:
    return Verdict(v.outcome, v.reason, v.cause, v.n_needed, t)
