"""The one claims table: the paper (``paper.py``), its checks (``checks.py``) and the known
findings (``findings.py``), checked against each other and against the library when this
module is imported. An unknown measure, measure argument, figure kind or finding key fails
here, with the list of known ones, before any test runs.
"""

from __future__ import annotations

import inspect

from ropedim.figures import DRAW
from ropedim.measures import MEASURES
from ropedim.models import ALIASES
from ropedim.profiles import PROFILES

from .checks import CHECKS, MASKS, SUBJECT_SLUG, SUBJECTS, TASKS, Check, Identity, QA, Toy, Weights, qa_plan
from .findings import FINDINGS, Finding, expected, validate as _validate_findings
from .paper import CLAIMS, Claim

__all__ = ["CLAIMS", "CHECKS", "FINDINGS", "MASKS", "TASKS", "Check", "Claim", "Finding", "Identity", "QA", "Toy",
           "Weights", "checks_for", "check_by_key", "expected", "qa_plan"]


def checks_for(subject_type: type) -> list[Check]:
    return [c for c in CHECKS if isinstance(c.subject, subject_type)]


def check_by_key(key: str) -> Check:
    for c in CHECKS:
        if c.key == key:
            return c
    raise KeyError(f"unknown check {key!r}; known: {', '.join(c.key for c in CHECKS)}")


def validate() -> None:
    keys = [c.key for c in CHECKS]
    if len(set(keys)) != len(keys):
        raise ValueError(f"check keys repeat: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    for c in CHECKS:
        where = f"check {c.key}"
        if c.claim not in CLAIMS:
            raise KeyError(f"{where}: unknown claim {c.claim!r}; known: {', '.join(CLAIMS)}")
        if not isinstance(c.subject, SUBJECTS):
            raise TypeError(f"{where}: subject {c.subject!r} is none of {[s.__name__ for s in SUBJECTS]}")
        m = MEASURES[c.measure]
        for args in (c.args, *({**c.args, **a} for a in c.alternatives.values())):
            try:
                inspect.signature(m.fn).bind(None, seed=0, **args)
            except TypeError as e:
                raise TypeError(f"{where}: arguments {sorted(args)} do not fit measure {c.measure}: {e}") from None
        for kind in CLAIMS[c.claim].figures:
            if not issubclass(m.payload, DRAW[kind].payload):
                raise TypeError(f"{where}: measure {c.measure} returns {m.payload.__name__}, figure {kind} "
                                f"draws {DRAW[kind].payload.__name__}")
    _validate_findings(set(keys), set(ALIASES) | set(SUBJECT_SLUG.values()), set(PROFILES))


validate()
