"""The claim record: one per claim test, between the measure and the report.

A record carries the spec that made it (check, subject, measure and arguments, criterion
with its source, profile, seed), what was measured (value, interval, figure payload), the
verdict and the known finding it was held against. Three constructors, one rule for the
paper's value (the check's, on every row): :meth:`measured`, :meth:`skipped`,
:meth:`errored`. Records travel as JSON (pytest-xdist workers to the controller,
``reports/claims.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .figures import Payload, payload_from_json

__all__ = ["ClaimRecord", "ERROR", "SCHEMA", "jsonable"]

ERROR = "error"
# the record format; a report file of another schema is not merged (its rows are re-run)
SCHEMA = 2


def jsonable(x: Any) -> Any:
    """Plain JSON values of check arguments and subjects (records hold specs, not objects)."""
    if hasattr(x, "spec") and callable(x.spec):
        return x.spec()
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "__dataclass_fields__"):
        return {"type": type(x).__name__, **{k: jsonable(v) for k, v in asdict(x).items()}}
    return x


@dataclass
class ClaimRecord:
    test_id: str
    claim: str
    check: str  # the check's key in the claims table, e.g. "C5e-first16-nq"
    model: str  # model slug, or "toy"
    verdict: str  # supported | not supported | inconclusive | skipped | error
    reason: str
    paper_value: str
    cause: str | None = None  # inconclusive: precondition | undefined | underpowered | near the threshold
    n_needed: int | None = None  # underpowered: the n (in ``unit``) that would decide it
    unit: str = ""  # what n counts
    threshold: float | list | None = None  # the bar it was judged against (a null's value resolved)
    mode: str | None = None  # masked accuracy: the masking mode the verdict rests on
    beyond: bool = False  # not a claim of the paper: a confound check beside it
    statistic: str = ""
    value: float | None = None
    interval: list[float] | None = None
    level: float | None = None
    p_value: float | None = None
    n: int | None = None
    criterion: dict | None = None  # Criterion.to_json(): kind, threshold, source
    measure: str = ""
    args: dict = field(default_factory=dict)
    subject: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    profile: str = ""
    seed: int | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    figure: Payload | None = None
    mode_check: list[dict] = field(default_factory=list)  # fast vs faithful rows of this model and task
    alternatives: dict = field(default_factory=dict)  # label -> {value, interval, verdict, reason, extra}: other readings
    readings_passing: list[str] | None = None  # readings that pass the paper's sanity check (Table 1) here
    fragile: bool | None = None  # the verdict differs between readings that pass it
    precondition_failed: list[str] | None = None  # checks this one rests on that do not hold here (B-heads: C5e/C5f)
    precondition_in_doubt: list[str] | None = None  # ... "not supported" but fragile (their alternatives disagree)
    expected: dict | None = None  # the known finding: {"outcomes": [...], "why": ...}
    test_outcome: str = ""  # passed | failed (the finding changed) | error | skipped
    run_at: str = ""
    schema: int = SCHEMA

    @classmethod
    def _of(cls, check, model: str, **kw) -> "ClaimRecord":
        return cls(test_id=check.test_id(model), claim=check.claim, check=check.key, model=model,
                   paper_value=check.paper_value, statistic=check.statistic, criterion=check.criterion.to_json(),
                   measure=check.measure, args=jsonable(check.args), subject=jsonable(check.subject),
                   beyond=check.beyond, **kw)

    @classmethod
    def measured(cls, check, model: str, measurement, verdict, expected, *, config: dict, profile: str,
                 seed: int, seconds: float, alternatives: dict | None = None) -> "ClaimRecord":
        est = measurement.estimate
        return cls._of(check, model, verdict=verdict.outcome, reason=verdict.reason, cause=verdict.cause,
                       n_needed=verdict.n_needed, unit=est.unit, threshold=verdict.threshold, mode=measurement.mode,
                       value=est.value, interval=est.interval, level=est.level, p_value=est.p_value, n=est.n,
                       config=config, profile=profile, seed=seed, seconds=seconds, extra=est.extra,
                       figure=measurement.figure, mode_check=[m.to_json() for m in measurement.mode_check],
                       expected=expected.to_json(), alternatives=alternatives or {})

    @classmethod
    def skipped(cls, check, model: str, why: str) -> "ClaimRecord":
        return cls._of(check, model, verdict="skipped", reason=why, test_outcome="skipped")

    @classmethod
    def errored(cls, check, model: str, why: str) -> "ClaimRecord":
        return cls._of(check, model, verdict=ERROR, reason=why, test_outcome=ERROR)

    def to_json(self, figure: bool = True) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["figure"] = self.figure.to_json() if (figure and self.figure is not None) else None
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), default=float)

    @classmethod
    def from_json(cls, d: dict) -> "ClaimRecord":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["figure"] = payload_from_json(d.get("figure"))
        return cls(**d)
