"""Known findings: where a check's measured verdict is not "supported", written down as
data. Key: (check key, model alias, profile); value: the expected outcome and why.

A claim test asserts that the measured verdict equals the expected one (``supported``
when no finding is listed), in either direction: a finding that changes, from
"inconclusive" to "not supported" as much as to "supported", fails the suite. No numbers
here: the report prints the measured interval beside the why. A finding of the
``default`` profile holds under every profile unless an entry of that profile replaces it
(a ``paper`` entry: the check was measured at the paper's size).
"""

from __future__ import annotations

from dataclasses import dataclass

from ropedim.verdict import INCONCLUSIVE, NOT_SUPPORTED, OUTCOMES, SUPPORTED

__all__ = ["Finding", "FINDINGS", "expected"]


@dataclass(frozen=True)
class Finding:
    outcome: str | tuple[str, ...]  # one verdict, or the verdicts the why allows
    why: str

    @property
    def outcomes(self) -> tuple[str, ...]:
        return self.outcome if isinstance(self.outcome, tuple) else (self.outcome,)

    def to_json(self) -> dict:
        return {"outcomes": list(self.outcomes), "why": self.why}


THE_CLAIM = Finding(SUPPORTED, "the paper's claim")
NS, INC = NOT_SUPPORTED, INCONCLUSIVE

FINDINGS: dict[tuple[str, str, str], Finding] = {
    # Qwen: the paper itself reports ρ = +0.10 (§5.3: "except for Qwen")
    **{(f"C5d-first16-{t}", "qwen", "default"): Finding((NS, INC), "the paper's own exception: ρ = +0.10 for "
                                                                  "Qwen (§5.3, 'except for Qwen')")
       for t in ("nq", "synthetic")},
}


def expected(check_key: str, model: str, profile: str) -> Finding:
    """The outcome a check must give on ``model`` under ``profile``: the profile's own
    finding, else the default profile's, else the paper's claim."""
    return FINDINGS.get((check_key, model, profile)) or FINDINGS.get((check_key, model, "default"), THE_CLAIM)


def validate(check_keys, models, profiles) -> None:
    """Every finding names a real check, model and profile, with valid outcomes."""
    for (check, model, profile), f in FINDINGS.items():
        for what, value, known in (("check", check, check_keys), ("model", model, models),
                                   ("profile", profile, profiles)):
            if value not in known:
                raise KeyError(f"known finding {(check, model, profile)}: unknown {what} {value!r}; "
                               f"known: {', '.join(sorted(known))}")
        if not set(f.outcomes) <= set(OUTCOMES):
            raise ValueError(f"known finding {(check, model, profile)}: outcomes {f.outcomes} not in {OUTCOMES}")
