"""The claim-verification report: ``reports/claims.json``, ``reports/claims.md`` and
one figure per claim in ``reports/figures/``.

Records of earlier runs are kept unless this run re-ran the same test, so
``pytest claims -k toy`` and ``pytest claims --model qwen`` add up to one report.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from . import figures
from .cache import atomic_write

ICON = {"supported": "✅ supported", "not supported": "❌ not supported",
        "inconclusive": "❔ inconclusive", "skipped": "⏭ skipped", "error": "💥 error"}


def write(records: list[dict], report_dir: Path, claims: dict) -> list[Path]:
    """Merge ``records`` into the report in ``report_dir``; ``claims``: id -> Claim."""
    report_dir = Path(report_dir)
    fig_dir = report_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_dir / "claims.json", report_dir / "claims.md"
    merged = {r["test_id"]: r for r in _load(json_path)}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for r in records:
        r["run_at"] = now
        merged[r["test_id"]] = r
    rows = sorted(merged.values(), key=lambda r: (r["claim"], r["model"], r["test_id"]))

    figs = {}
    for claim_id, claim in claims.items():
        mine = [r for r in rows if r["claim"] == claim_id and r.get("figure")]
        if mine:
            figs[claim_id] = [figures.draw(kind, mine, fig_dir / f"{claim_id}-{kind}.png")
                              for kind in claim.figures]
    public = [{k: v for k, v in r.items() if k != "figure"} for r in rows]
    atomic_write(json_path, lambda t: t.write_text(json.dumps(public, indent=1, default=float)))
    atomic_write(md_path, lambda t: t.write_text(_markdown(rows, claims, figs, report_dir)))
    # figure data stays in a side file so the next run can redraw merged figures
    atomic_write(report_dir / ".figure-data.json",
                 lambda t: t.write_text(json.dumps({r["test_id"]: r.get("figure") for r in rows})))
    return [md_path, json_path, *(p for ps in figs.values() for p in ps)]


def _load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
        side = path.parent / ".figure-data.json"
        figs = json.loads(side.read_text()) if side.exists() else {}
    except (json.JSONDecodeError, OSError):
        return []  # a damaged report is rebuilt from this run
    for r in rows:
        r["figure"] = figs.get(r["test_id"])
    return rows


def fmt_value(r: dict) -> str:
    if r.get("value") is None:
        return "—"
    lo, hi = r["interval"]
    return f"{r['value']:.3g} [{lo:.3g}, {hi:.3g}]"


def fmt_threshold(r: dict) -> str:
    t = r.get("threshold")
    if t is None:
        return "—"
    if r["criterion"] == "within":
        return f"≈ within [{t[0]:g}, {t[1]:g}]"
    return f"{'↑ >' if r['criterion'] == 'greater' else '↓ <'} {t:g}"


def _markdown(rows, claims, figs, report_dir) -> str:
    shown: set = set()  # (model, task) whose fast-vs-faithful table is out
    out = ["# Claim verification report",
           "",
           "Chiang & Yogatama (2025), *The Rotary Position Embedding May Cause Dimension "
           "Inefficiency in Attention Heads for Long-Distance Retrieval*. Each row is one "
           "claim test: the paper's number beside ours, with a "
           f"{int(100 * rows[0].get('level', 0.95)) if rows else 95}% bootstrap interval, the "
           "tolerance from the claims table and the verdict. ↑/↓: the claim puts the "
           "statistic above/below the threshold; ≈: an equivalence band.",
           "",
           "| claim | test | paper says | we measured [interval] | tolerance | verdict |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['claim']} | `{r['test_id']}` | {r.get('paper_value', '')} | {fmt_value(r)} "
                   f"| {fmt_threshold(r)} | {ICON.get(r['verdict'], r['verdict'])} |")
    for cid, claim in claims.items():
        mine = [r for r in rows if r["claim"] == cid]
        if not mine:
            continue
        out += ["", f"## {cid} ({claim.section})", "", f"> {claim.quote}", "",
                f"The paper's evidence: {claim.paper_value}.", ""]
        for path in figs.get(cid, []):
            out += [f"![{cid}]({path.relative_to(report_dir).as_posix()})", ""]
        if claim.paper_table:
            out += _accuracy_table(claim.paper_table, mine) + _mode_table(mine, shown)
        out += ["| test | statistic | measured [interval] | n | tolerance | verdict | why | seconds |",
                "|---|---|---|---|---|---|---|---|"]
        for r in mine:
            out.append(f"| `{r['test_id']}` | {r.get('statistic', '')} | {fmt_value(r)} | {r.get('n') or '—'} "
                       f"| {fmt_threshold(r)} | {ICON.get(r['verdict'], r['verdict'])} | {r.get('reason', '')} "
                       f"| {r.get('seconds', 0):.1f} |")
        seen = set()
        for r in mine:
            c = r.get("config") or {}
            if "skipped_too_long" in c and (r["model"], c.get("task")) not in seen:
                seen.add((r["model"], c.get("task")))
                out.append(f"- {r['model']} on {c.get('task')}: data {c.get('data')}; {c['n_kept']} "
                           f"questions kept at each of the gold positions {c.get('positions_1based')}, "
                           f"{len(c['skipped_too_long'])} skipped because the prompt exceeds the model's "
                           f"{c.get('max_len')} tokens (prompts {c.get('tokens_min')}-{c.get('tokens_max')} tokens).")
        if seen:
            out.append("")
        if claim.decisions:
            out += ["", "What the paper leaves open, and what we chose:", ""]
            out += [f"- {d}" for d in claim.decisions]
        for r in mine:
            if r.get("config") or r.get("extra"):
                out += ["", f"<details><summary>{r['test_id']}: configuration and details "
                        f"(profile {r.get('profile')}, seed {r.get('seed')}, run {r.get('run_at')})</summary>",
                        "", "```json", json.dumps({"config": r.get("config"), "extra": r.get("extra")},
                                                  indent=1, default=float), "```", "", "</details>"]
    return "\n".join(out) + "\n"


def _accuracy_table(paper: dict, records: list[dict]) -> list[str]:
    """The paper's accuracy table beside ours (gold at first / middle / last, average)."""
    out = ["| source | variant | first | middle | last | avg |", "|---|---|---|---|---|---|"]
    for model, rows in paper.items():
        for variant, vals in rows.items():
            out.append(f"| paper: {model} | {variant} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    seen = set()
    for r in records:
        f = r.get("figure") or {}
        key = (f.get("model"), f.get("task"))
        if "accuracy" not in f or key in seen:
            continue
        seen.add(key)
        variants = [v for v in next(iter(paper.values())) if v in f["accuracy"]]
        for v in variants:
            acc = f["accuracy"][v]
            out.append(f"| ours: {key[0]} ({key[1]}, n = {f['n']}, {f.get('mode', 'fast')} mode) | {v} | "
                       + " | ".join(f"{a:.2f}" for a in acc) + f" | {sum(acc) / len(acc):.2f} |")
    return out + [""]


def _mode_table(records: list[dict], shown: set) -> list[str]:
    """Fast mode (mask from the question on) against faithful (mask at every position),
    once per model and task in the whole report (``shown``)."""
    out = []
    for r in records:
        f = r.get("figure") or {}
        check = f.get("fast_vs_faithful")
        if not check or (f.get("model"), f.get("task")) in shown:
            continue
        if not out:
            out += ["How far fast mode (mask from the question on, the context's cache shared) is from "
                    "faithful mode (mask at every position, the paper's), on the same questions:", "",
                    "| model (task) | variant | questions × positions | accuracy fast | accuracy faithful "
                    "| same correctness | same answer |", "|---|---|---|---|---|---|---|"]
        shown.add((f.get("model"), f.get("task")))
        for v, c in check.items():
            out.append(f"| {f['model']} ({f['task']}) | {v} | {c['n']} | {c['accuracy_fast']:.1f} | "
                       f"{c['accuracy_faithful']:.1f} | {100 * c['same_correctness']:.0f}% | "
                       f"{100 * c['same_answer']:.0f}% |")
    return out + [""] if out else []
