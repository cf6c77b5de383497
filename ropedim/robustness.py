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
from .utility import PRIMARY, READINGS
from .verdict import NOT_SUPPORTED

__all__ = ["sanity", "annotate", "task_of", "PRECONDITIONS"]

SANITY_CLAIM = "C5c"  # Table 1
# claim -> the check (claim id) it rests on (issue 19 §1): C5e/C5f mask dims of the retrieval heads,
# which says something about retrieval only where those heads matter more than random ones
PRECONDITIONS = {"C5e": "B-heads", "C5f": "B-heads"}


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


def other_alternatives(r: ClaimRecord) -> bool:
    """Whether a judged record has alternatives that are not readings of Eq. 4 (an
    ablation's form, issue 19 §2; how many heads B-heads masks): open choices no sanity
    check of the paper judges, so every one of them counts for fragility."""
    return (bool(r.alternatives) and not any(label in READINGS for label in r.alternatives)
            and r.verdict not in ("error", "skipped"))


def annotate(records: list[ClaimRecord]) -> None:
    """Set ``readings_passing`` and ``fragile`` on every record that has readings; a record
    whose alternatives are not Eq. 4's readings is fragile where any two verdicts differ."""
    checks = sanity(records)
    for r in records:
        if other_alternatives(r):
            verdicts = {r.verdict, *(a["verdict"] for a in r.alternatives.values() if a["verdict"] != "skipped")}
            r.fragile = len(verdicts) > 1
            continue
        passing = checks.get((r.model, task_of(r)))
        if passing is None or not r.alternatives or r.verdict in ("error", "skipped"):
            continue
        ok = [k for k, v in passing.items() if v != NOT_SUPPORTED]
        r.readings_passing = ok
        verdicts = {PRIMARY: r.verdict, **{k: a["verdict"] for k, a in r.alternatives.items()}}
        r.fragile = len({verdicts[k] for k in ok if k in verdicts}) > 1
    link_preconditions(records)


def link_preconditions(records: list[ClaimRecord]) -> None:
    """Set ``precondition_failed`` on each record of a claim in :data:`PRECONDITIONS` to the
    test ids of the checks it rests on that are "not supported" on the same model and task,
    and robustly so (None where every one holds or none was run); a "not supported" that is
    fragile (its alternatives disagree) puts the precondition in doubt
    (``precondition_in_doubt``), not failed: no claim is blocked by a verdict our choice made."""
    for r in records:
        if r.claim in PRECONDITIONS:
            failing = [b for b in records if b.claim == PRECONDITIONS[r.claim] and b.model == r.model
                       and task_of(b) == task_of(r) and b.verdict == NOT_SUPPORTED]
            r.precondition_failed = [b.test_id for b in failing if not b.fragile] or None
            r.precondition_in_doubt = [b.test_id for b in failing if b.fragile] or None
