"""How robust a verdict is to the paper's open choices (issue: a refutation must not come
from our reading of the paper).

Table 1 is the paper's own sanity check of a reading of Eq. 4: masking the dims with
u < 0.5 barely changes accuracy. A reading *passes* it on a model and task unless its C5c
verdict there is "not supported" (the check refutes that reading; an underpowered C5c
refutes none). A verdict computed under several readings (a check's ``alternatives``) is
*fragile* when it differs between readings that pass: the finding then depends on a
choice the paper leaves open. Counting the undecided readings as passing makes more
verdicts fragile, never fewer: the cautious side for a refutation.
"""

from __future__ import annotations

from .record import ClaimRecord
from .utility import PRIMARY
from .verdict import NOT_SUPPORTED

__all__ = ["sanity", "annotate", "task_of"]

SANITY_CLAIM = "C5c"  # Table 1


def task_of(r: ClaimRecord) -> str | None:
    """The QA task a record is about (None: the toy, RoPE itself, a model's weights)."""
    return r.subject.get("task") if isinstance(r.subject, dict) else None


def sanity(records: list[ClaimRecord]) -> dict[tuple[str, str], dict[str, str]]:
    """(model, task) -> {reading: C5c verdict under it} from the C5c records."""
    out = {}
    for r in records:
        if r.claim == SANITY_CLAIM and r.verdict not in ("error", "skipped"):
            per = {PRIMARY: r.verdict}
            per.update({label: a["verdict"] for label, a in r.alternatives.items()})
            out[r.model, task_of(r)] = per
    return out


def annotate(records: list[ClaimRecord]) -> None:
    """Set ``readings_passing`` and ``fragile`` on every record that has readings."""
    checks = sanity(records)
    for r in records:
        passing = checks.get((r.model, task_of(r)))
        if passing is None or not r.alternatives or r.verdict in ("error", "skipped"):
            continue
        ok = [k for k, v in passing.items() if v != NOT_SUPPORTED]
        r.readings_passing = ok
        verdicts = {PRIMARY: r.verdict, **{k: a["verdict"] for k, a in r.alternatives.items()}}
        r.fragile = len({verdicts[k] for k in ok if k in verdicts}) > 1
