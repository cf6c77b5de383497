"""The claim-verification report: ``reports/claims.json``, ``reports/claims.md`` and one
figure per claim in ``reports/figures/``, rendered from :class:`ropedim.record.ClaimRecord`.

Records of earlier runs are kept unless this run re-ran the same test, so
``pytest claims -k toy`` and ``pytest claims --model qwen`` add up to one report.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

from . import figures
from .cache import atomic_write
from .robustness import annotate
from .record import SCHEMA, ClaimRecord
from .verdict import Criterion

ICON = {"supported": "✅ supported", "not supported": "❌ not supported",
        "inconclusive": "❔ inconclusive", "skipped": "⏭ skipped", "error": "💥 error"}


def write(records: list[ClaimRecord], report_dir: Path, claims: dict) -> list[Path]:
    """Merge ``records`` into the report in ``report_dir``; ``claims``: id -> claims.paper.Claim."""
    report_dir = Path(report_dir)
    fig_dir = report_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_dir / "claims.json", report_dir / "claims.md"
    merged = {r.test_id: r for r in load(json_path)}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for r in records:
        r.run_at = r.run_at or now  # a merged record keeps its run's time
        merged[r.test_id] = r
    rows = sorted(merged.values(), key=lambda r: (r.claim, r.model, r.test_id))
    annotate(rows)

    figs = {}
    for claim_id, claim in claims.items():
        payloads = [r.figure for r in rows if r.claim == claim_id and r.figure is not None]
        if payloads:
            figs[claim_id] = [figures.draw(kind, payloads, fig_dir / f"{claim_id}-{kind}.png")
                              for kind in claim.figures]
    public = [r.to_json(figure=False) for r in rows]
    atomic_write(json_path, lambda t: t.write_text(json.dumps(public, indent=1, default=float)))
    atomic_write(md_path, lambda t: t.write_text(_markdown(rows, claims, figs, report_dir)))
    # figure payloads stay in a side file so the next run can redraw merged figures
    side = {r.test_id: r.figure.to_json() for r in rows if r.figure is not None}
    atomic_write(report_dir / ".figure-data.json", lambda t: t.write_text(json.dumps(side)))
    return [md_path, json_path, *(p for ps in figs.values() for p in ps)]


def load(path: Path) -> list[ClaimRecord]:
    """The records of an earlier report (with their figure payloads), or none.

    Rows of another record schema (an older version of this tool) are dropped with a
    warning, never merged: their fields mean something else, and a report that mixed
    them would show verdicts made under old definitions beside new ones."""
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
        side = path.parent / ".figure-data.json"
        figs = json.loads(side.read_text()) if side.exists() else {}
    except (json.JSONDecodeError, OSError) as e:
        warnings.warn(f"{path}: unreadable ({e}); the report is rebuilt from this run's records")
        return []
    current = [r for r in rows if isinstance(r, dict) and r.get("schema") == SCHEMA]
    if len(current) < len(rows):
        warnings.warn(f"{path}: {len(rows) - len(current)} record(s) of an older report format dropped "
                      f"(schema != {SCHEMA}); re-run those claims to have them in the report")
    return [ClaimRecord.from_json({**r, "figure": figs.get(r["test_id"])}) for r in current]


def fmt_value(r: ClaimRecord) -> str:
    if r.value is None:
        return "—"
    lo, hi = r.interval
    return f"{r.value:.3g} [{lo:.3g}, {hi:.3g}]"


def fmt_criterion(r: ClaimRecord) -> str:
    return Criterion.from_json(r.criterion).describe() if r.criterion else "—"


def _verdict(r: ClaimRecord) -> str:
    text = ICON.get(r.verdict, r.verdict)
    if r.test_outcome == "failed":
        text += " (the known finding changed)"
    return text


def _finding(r: ClaimRecord) -> str:
    e = r.expected
    if not e or e["outcomes"] == ["supported"]:
        return ""
    return f"{' or '.join(e['outcomes'])}: {e['why']}"


def _markdown(rows: list[ClaimRecord], claims: dict, figs: dict, report_dir: Path) -> str:
    level = next((r.level for r in rows if r.level), 0.95)
    out = ["# Claim verification report",
           "",
           "Chiang & Yogatama (2025), *The Rotary Position Embedding May Cause Dimension "
           "Inefficiency in Attention Heads for Long-Distance Retrieval*. Each row is one "
           f"claim test: the paper's number beside ours, with a {int(100 * level)}% bootstrap "
           "interval, the tolerance from the claims table and the verdict. ↑/↓: the claim puts "
           "the statistic above/below the threshold; ≈: an equivalence band. A known finding "
           "(a check that does not hold on a model) is written down with its reason; a run whose "
           "verdict differs from it fails.",
           "",
           "| claim | test | paper says | we measured [interval] | tolerance | verdict |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.claim} | `{r.test_id}` | {r.paper_value} | {fmt_value(r)} "
                   f"| {fmt_criterion(r)} | {_verdict(r)} |")
    for cid, claim in claims.items():
        mine = [r for r in rows if r.claim == cid]
        if mine:
            out += _claim_section(cid, claim, mine, figs.get(cid, []), report_dir)
    out += _mode_section(rows)
    return "\n".join(out) + "\n"


def _claim_section(cid, claim, mine: list[ClaimRecord], figs: list[Path], report_dir: Path) -> list[str]:
    out = ["", f"## {cid} ({claim.section})", "", f"> {claim.quote}", "", f"The paper's evidence: {claim.evidence}.", ""]
    for path in figs:
        out += [f"![{cid}]({path.relative_to(report_dir).as_posix()})", ""]
    if claim.paper_table:
        out += _accuracy_table(claim.paper_table, mine)
    out += ["| test | statistic | measured [interval] | n | tolerance | verdict | why | known finding | seconds |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in mine:
        out.append(f"| `{r.test_id}` | {r.statistic} | {fmt_value(r)} | {r.n or '—'} | {fmt_criterion(r)} "
                   f"| {_verdict(r)} | {r.reason} | {_finding(r)} | {r.seconds:.1f} |")
    sources = {}
    for r in mine:
        if r.criterion and r.criterion.get("source"):
            sources.setdefault(fmt_criterion(r), r.criterion["source"])
    if sources:
        out += ["", "Where the tolerances come from:", ""] + [f"- {t}: {s}" for t, s in sources.items()]
    data_lines = {}
    for r in mine:
        c = r.config
        if "n_kept" in c:
            data_lines.setdefault((r.model, c["task"]), (
                f"- {r.model} on {c['task']}: data {c['data']}; {c['n_kept']} questions kept at each of the "
                f"gold positions {c['positions_1based']}, {len(c['skipped_too_long'])} skipped because the prompt "
                f"exceeds the model's {c['max_len']} tokens (prompts {c['tokens_min']}-{c['tokens_max']} tokens)."))
    if data_lines:
        out += [""] + list(data_lines.values())
    if claim.decisions:
        out += ["", "What the paper leaves open, and what we chose:", ""] + [f"- {d}" for d in claim.decisions]
    for r in mine:
        if r.config or r.extra:
            spec = {"measure": r.measure, "args": r.args, "subject": r.subject, "config": r.config, "extra": r.extra}
            out += ["", f"<details><summary>{r.test_id}: configuration and details (profile {r.profile}, "
                    f"seed {r.seed}, run {r.run_at})</summary>", "", "```json",
                    json.dumps(spec, indent=1, default=float), "```", "", "</details>"]
    return out


def _accuracy_table(paper: dict, records: list[ClaimRecord]) -> list[str]:
    """The paper's accuracy table beside ours (gold at first / middle / last, average)."""
    out = ["| source | mask | first | middle | last | avg |", "|---|---|---|---|---|---|"]
    for model, rows in paper.items():
        for variant, vals in rows.items():
            out.append(f"| paper: {model} | {variant} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    masks = list(next(iter(paper.values())))
    seen = set()
    for r in records:
        f = r.figure
        if not isinstance(f, figures.AccuracyByPosition) or (f.model, f.task) in seen:
            continue
        seen.add((f.model, f.task))
        for v in (v for v in masks if v in f.accuracy):
            acc = f.accuracy[v]
            out.append(f"| ours: {f.model} ({f.task}, n = {f.n}, {f.mode} mode) | {v} | "
                       + " | ".join(f"{a:.2f}" for a in acc) + f" | {sum(acc) / len(acc):.2f} |")
    return out + [""]


def _mode_section(rows: list[ClaimRecord]) -> list[str]:
    """Fast mode (mask from the question on) against faithful (mask at every position),
    once per model and task."""
    checks = {}
    for r in rows:
        if r.mode_check and isinstance(r.figure, figures.AccuracyByPosition):
            checks.setdefault((r.figure.model, r.figure.task), r.mode_check)
    if not checks:
        return []
    out = ["", "## Masking mode: fast against faithful", "",
           "How far fast mode (mask from the question on, the context's cache shared) is from "
           "faithful mode (mask at every position, the paper's), on the same questions:", "",
           "| model (task) | mask | questions × positions | accuracy fast | accuracy faithful "
           "| same correctness | same answer |", "|---|---|---|---|---|---|---|"]
    for (model, task), rows_ in checks.items():
        for c in rows_:
            out.append(f"| {model} ({task}) | {c['variant']} | {c['n']} | {c['accuracy_fast']:.1f} | "
                       f"{c['accuracy_faithful']:.1f} | {100 * c['same_correctness']:.0f}% | "
                       f"{100 * c['same_answer']:.0f}% |")
    return out
