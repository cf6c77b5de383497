"""The claim-verification report: ``reports/claims.json`` (the record), and rendered from
it ``reports/claims.md``, ``reports/claims.html`` (one self-contained page) and one figure
per claim in ``reports/figures/``.

The page opens with the verdict matrix (the paper's claims in the paper's order × the
subjects: the toy, each model on each task), then one line per claim (its sentence and
what we found), then a section per claim. Both pages are rendered by Jinja2 templates
(``ropedim/templates/``) from one view of the records (:func:`view`).

Records of earlier runs are kept unless this run re-ran the same test, so
``pytest claims -k toy`` and ``pytest claims --model qwen`` add up to one report. The
report is rebuilt from its record alone, byte for byte::

    python -m ropedim.report reports/claims.json                     # re-render md, html, figures
    python -m ropedim.report merge a/claims.json b/claims.json --out reports/   # runs of several machines
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from . import figures
from .cache import atomic_write, lock_for
from .record import SCHEMA, ClaimRecord
from .robustness import annotate, other_alternatives, task_of
from .verdict import Criterion

__all__ = ["write", "render", "rebuild", "merge", "load", "view", "main"]

GLYPH = {"supported": "✅", "not supported": "❌", "inconclusive": "❔", "skipped": "⏭", "error": "💥"}
ICON = {k: f"{g} {k}" for k, g in GLYPH.items()}
# a cell's summary verdict: the first of these among its checks
PRECEDENCE = ("error", "not supported", "inconclusive", "supported", "skipped")
TOY = "toy"  # the matrix column of the subjects that are no model (the toy, RoPE itself)
NO_MODEL = ("toy", "rope")
TOY_LABEL = "RoPE, toy"  # §2's identity on random vectors, §4's toy
FIGURE_DATA = ".figure-data.json"
GLYPHS_PER_CELL = 4  # more checks than this in a cell: counts instead of one glyph each
QUOTE_CHARS = 110


# ---------------------------------------------------------------- writing and reading the record

def write(records: list[ClaimRecord], report_dir: Path, claims: dict, checks: list[str] | None = None) -> list[Path]:
    """Merge ``records`` into the report in ``report_dir``; ``claims``: id -> claims.paper.Claim;
    ``checks``: the claims table's check keys in its order (a claim's checks are shown in
    it, its first the cell's value), by default the keys' alphabetical order."""
    report_dir = Path(report_dir)
    merged = {r.test_id: r for r in load(report_dir / "claims.json")}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for r in records:
        r.run_at = r.run_at or now  # a merged record keeps its run's time
        merged[r.test_id] = r
    return render(list(merged.values()), report_dir, claims, checks)


def render(records: list[ClaimRecord], report_dir: Path, claims: dict, checks: list[str] | None = None) -> list[Path]:
    """Write the report of exactly ``records``: claims.json, its figure data, the figures,
    claims.md and claims.html. A function of the records only (no clock, no run state)."""
    report_dir = Path(report_dir)
    fig_dir = report_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(records, key=lambda r: (r.claim, r.model, r.test_id))
    annotate(rows)
    figs = {}
    for claim_id, claim in claims.items():
        payloads = [r.figure for r in rows if r.claim == claim_id and r.figure is not None]
        if payloads:
            figs[claim_id] = [figures.draw(kind, payloads, fig_dir / f"{claim_id}-{kind}.png")
                              for kind in claim.figures]
    json_path, md_path, html_path = (report_dir / f"claims.{x}" for x in ("json", "md", "html"))
    public = [r.to_json(figure=False) for r in rows]
    _put(json_path, json.dumps(public, indent=1, default=float))
    # figure payloads stay in a side file so that a later run can redraw merged figures
    _put(report_dir / FIGURE_DATA, json.dumps({r.test_id: r.figure.to_json() for r in rows if r.figure is not None}))
    v = view(rows, claims, figs, report_dir, checks)
    _put(md_path, _template("claims.md.j2").render(**v))
    _put(html_path, _template("claims.html.j2").render(**v, image=functools.partial(_data_uri, report_dir=report_dir)))
    return [md_path, html_path, json_path, *(p for ps in figs.values() for p in ps)]


def _put(path: Path, text: str) -> None:
    atomic_write(path, lambda t: t.write_text(text, encoding="utf-8"))


def load(path: Path) -> list[ClaimRecord]:
    """The records of an earlier report (with their figure payloads), or none.

    Rows of another record schema (an older version of this tool) are dropped with a
    warning, never merged: their fields mean something else, and a report that mixed
    them would show verdicts made under old definitions beside new ones."""
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
        side = path.parent / FIGURE_DATA
        figs = json.loads(side.read_text()) if side.exists() else {}
    except (json.JSONDecodeError, OSError) as e:
        warnings.warn(f"{path}: unreadable ({e}); the report is rebuilt from this run's records")
        return []
    current = [r for r in rows if isinstance(r, dict) and r.get("schema") == SCHEMA]
    if len(current) < len(rows):
        warnings.warn(f"{path}: {len(rows) - len(current)} record(s) of an older report format dropped "
                      f"(schema != {SCHEMA}); re-run those claims to have them in the report")
    return [ClaimRecord.from_json({**r, "figure": figs.get(r["test_id"])}) for r in current]


def _records_of(path: Path) -> list[ClaimRecord]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such claims.json (give the files a run wrote to its --report-dir)")
    records = load(Path(path))
    if not records:
        raise ValueError(f"{path}: no records could be read (an empty, damaged or foreign file)")
    return records


def rebuild(json_path: Path, claims: dict, checks: list[str] | None = None) -> list[Path]:
    """Re-render the report beside ``json_path`` from it (and its figure data) alone."""
    json_path = Path(json_path)
    with lock_for(json_path):
        return render(_records_of(json_path), json_path.parent, claims, checks)


def merge(inputs: list[Path], out: Path, claims: dict, checks: list[str] | None = None) -> list[Path]:
    """Merge the records of ``inputs`` (claims.json paths) into the report in ``out``. A
    test present in several inputs keeps its most recent run (``run_at``; a tie goes to the
    input named later); the out report's other tests are kept."""
    latest = {}
    for path in inputs:
        for r in _records_of(path):
            if r.test_id not in latest or r.run_at >= latest[r.test_id].run_at:
                latest[r.test_id] = r
    with lock_for(Path(out) / "claims.json"):
        return write(list(latest.values()), out, claims, checks)


# ---------------------------------------------------------------- the view both templates render

def fmt_value(r: ClaimRecord | dict) -> str:
    value, interval = (r.get("value"), r.get("interval")) if isinstance(r, dict) else (r.value, r.interval)
    if value is None:
        return "—"
    if not interval:
        return f"{value:.3g}"
    return f"{value:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]"


def fmt_criterion(r: ClaimRecord) -> str:
    return Criterion.from_json(r.criterion).describe() if r.criterion else "—"


def _verdict(r: ClaimRecord) -> str:
    text = ICON.get(r.verdict, r.verdict)
    if r.mode:  # masked accuracy: the masking mode the verdict rests on
        text += f" · {r.mode} mode"
    if r.test_outcome == "failed":
        text += " (the known finding changed)"
    return text


def _finding(r: ClaimRecord) -> str:
    e = r.expected
    if not e or e["outcomes"] == ["supported"]:
        return ""
    return f"known finding, {' or '.join(e['outcomes'])}: {e['why']}"


def summary_verdict(verdicts) -> str:
    present = set(verdicts)
    return next((v for v in PRECEDENCE if v in present), "skipped")


@dataclass
class Column:
    model: str  # TOY for the subjects that are no model
    task: str | None

    @property
    def label(self) -> str:
        if self.model == TOY:
            return TOY_LABEL
        return self.model if self.task is None else f"{self.model} · {self.task}"

    def holds(self, r: ClaimRecord) -> bool:
        """A record of this subject; a model's weights belong to each of its tasks."""
        if self.model == TOY:
            return r.model in NO_MODEL
        return r.model == self.model and task_of(r) in (None, self.task)


@dataclass
class Cell:
    records: list[ClaimRecord]
    verdict: str = ""
    glyphs: str = ""
    value: str = ""
    title: str = ""
    changed: bool = False  # a check's known finding changed (its test failed)
    fragile: bool = False  # a check's verdict differs between readings Table 1 does not refute
    blocked: bool = False  # a check it rests on does not hold here (B-heads for C5e/C5f)
    doubted: bool = False  # ... "not supported" there but fragile

    def __post_init__(self):
        vs = [r.verdict for r in self.records]
        self.verdict = summary_verdict(vs)
        if len(vs) <= GLYPHS_PER_CELL:
            self.glyphs = "".join(GLYPH.get(v, "?") for v in vs)
        else:
            self.glyphs = " ".join(f"{vs.count(v)}{GLYPH[v]}" for v in GLYPH if v in vs)
        primary = next((r for r in self.records if r.value is not None), None)
        self.value = fmt_value(primary) if primary else ""
        self.title = "; ".join(f"{r.check}: {r.verdict} {fmt_value(r)}" for r in self.records)
        self.changed = any(r.test_outcome == "failed" for r in self.records)
        self.fragile = any(r.fragile for r in self.records)
        self.blocked = any(r.precondition_failed for r in self.records)
        self.doubted = not self.blocked and any(r.precondition_in_doubt for r in self.records)


@dataclass
class MatrixRow:
    claim: str
    anchor: str
    label: str
    beyond: bool
    cells: list[Cell | None]


@dataclass
class Section:
    id: str
    anchor: str
    claim: object  # claims.paper.Claim
    figures: list[str]  # paths relative to the report
    records: list[ClaimRecord]
    paper_table: list[list[str]] = field(default_factory=list)
    statistics: dict = field(default_factory=dict)  # check -> what its number is
    sources: dict = field(default_factory=dict)  # tolerance -> where it comes from
    readings: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # robustness: fragile verdicts, readings that pass Table 1
    data: list[str] = field(default_factory=list)
    configs: dict = field(default_factory=dict)  # subject -> "key = value; ..."


def _are(ids: list[str]) -> str:
    """'a is' / 'a and b are': the subject of a note's verb."""
    return f"{ids[0]} is" if len(ids) == 1 else f"{', '.join(ids[:-1])} and {ids[-1]} are"


def anchor(claim_id: str) -> str:
    return claim_id.lower().replace(" ", "-")


def shorten(text: str, n: int = QUOTE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def columns_of(rows: list[ClaimRecord]) -> list[Column]:
    cols = [Column(TOY, None)] if any(r.model in NO_MODEL for r in rows) else []
    for model in sorted({r.model for r in rows} - set(NO_MODEL)):
        tasks = sorted({t for r in rows if r.model == model and (t := task_of(r))})
        cols += [Column(model, t) for t in tasks] or [Column(model, None)]
    return cols


def _matrix(rows, claims, cols) -> list[MatrixRow]:
    """``rows`` in check order: a cell's first check gives its value."""
    out = []
    for beyond in (False, True):
        for cid in claims:
            mine = [r for r in rows if r.claim == cid and r.beyond == beyond]
            if mine:
                cells = [Cell(c) if (c := [r for r in mine if col.holds(r)]) else None for col in cols]
                out.append(MatrixRow(cid, anchor(cid), cid + (" (beyond the paper)" if beyond else ""), beyond, cells))
    return out


def found(row: MatrixRow, cols: list[Column]) -> str:
    """'supported on toy; not supported on smollm2 · nq': a row across its subjects."""
    by = {}
    for col, cell in zip(cols, row.cells):
        if cell is not None:
            by.setdefault(cell.verdict, []).append(col.label + (" (fragile)" if cell.fragile else ""))
    return "; ".join(f"{GLYPH.get(v, '')} {v} on {', '.join(subjects)}" for v, subjects in
                     sorted(by.items(), key=lambda kv: PRECEDENCE.index(kv[0]) if kv[0] in PRECEDENCE else 9))


def _paper_table(paper: dict, records: list[ClaimRecord]) -> list[list[str]]:
    """The paper's accuracy table beside ours (gold at first / middle / last, average)."""
    out = [[f"paper: {model}", variant, *(f"{v:.2f}" for v in vals)]
           for model, rows in paper.items() for variant, vals in rows.items()]
    masks = list(next(iter(paper.values())))
    seen = set()
    for r in records:
        f = r.figure
        if not isinstance(f, figures.AccuracyByPosition) or (f.model, f.task) in seen:
            continue
        seen.add((f.model, f.task))
        for v in (v for v in masks if v in f.accuracy):
            acc = f.accuracy[v]
            out.append([f"ours: {f.model} ({f.task}, n = {f.n}, {f.mode} mode)", v,
                        *(f"{a:.2f}" for a in acc), f"{sum(acc) / len(acc):.2f}"])
    return out


def _short(value) -> str | None:
    """A configuration value short enough for one line, else None (it stays in claims.json)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
    elif isinstance(value, (list, tuple)) and len(value) <= 8 and all(not isinstance(x, (dict, list)) for x in value):
        text = "[" + ", ".join(map(str, value)) + "]"
    else:
        return None
    return text if len(text) <= 80 else None


def _section(cid, claim, mine: list[ClaimRecord], figs: list[Path], report_dir: Path) -> Section:
    s = Section(cid, anchor(cid), claim, [p.relative_to(report_dir).as_posix() for p in figs], mine)
    if claim.paper_table:
        s.paper_table = _paper_table(claim.paper_table, mine)
    for r in mine:
        s.statistics.setdefault(r.check.removeprefix(cid).lstrip("-") or cid, r.statistic)
        if r.criterion and r.criterion.get("source"):
            s.sources.setdefault(fmt_criterion(r), r.criterion["source"])
        for label, a in r.alternatives.items():
            s.readings.append({"test": r.test_id, "reading": label, "value": fmt_value(a),
                               "verdict": ICON.get(a["verdict"], a["verdict"]), "reason": a.get("reason", ""),
                               "passes": r.readings_passing is not None and label in r.readings_passing})
        if other_alternatives(r):
            s.notes.append(f"{r.test_id}: " + (
                "fragile, the verdict differs between the alternatives shown (" if r.fragile else
                "the same verdict under every alternative shown (") + f"{', '.join(r.alternatives)}; no sanity check "
                "of the paper judges them, so each counts).")
        elif r.fragile:
            s.notes.append(f"{r.test_id}: fragile, the verdict differs between readings that pass the paper's "
                           f"sanity check (Table 1) here, i.e. that it does not refute: {', '.join(r.readings_passing)}.")
        elif r.readings_passing is not None:
            s.notes.append(f"{r.test_id}: the same verdict under every reading that Table 1 does not refute here "
                           f"({', '.join(r.readings_passing) or 'none does'}).")
        if (line := _accuracy_note(r)) is not None:
            s.notes.append(line)
        if r.precondition_failed:
            s.notes.append(f"{r.test_id}: precondition failed: {_are(r.precondition_failed)} not supported "
                           "here (the retrieval heads cost no more than random heads of their layers), so masking "
                           "their dims says nothing specific to long-distance retrieval on this model and task.")
        if r.precondition_in_doubt:
            s.notes.append(f"{r.test_id}: precondition in doubt: {_are(r.precondition_in_doubt)} not "
                           "supported here but fragile (alternatives disagree: see the row), so this verdict is "
                           "not blocked; read it with the rows named beside it.")
        c = r.config
        if "n_kept" in c and (line := (
                f"{r.model} on {c['task']}: data {c['data']}; {c['n_kept']} questions kept at each of the "
                f"gold positions {c['positions_1based']}, {len(c['skipped_too_long'])} skipped because the prompt "
                f"exceeds the model's {c['max_len']} tokens (prompts {c['tokens_min']}-{c['tokens_max']} tokens).")
                ) not in s.data:
            s.data.append(line)
        subject = r.model + (f" · {task_of(r)}" if task_of(r) else "")
        short = {k: t for k, v in c.items() if (t := _short(v)) is not None}
        if short and subject not in s.configs:
            s.configs[subject] = "; ".join(f"{k} = {v}" for k, v in short.items())
    return s


def _accuracy_note(r: ClaimRecord) -> str | None:
    """The accuracy a log-prob check shows beside its verdict (``extra["accuracy"]``), a line."""
    acc = (r.extra or {}).get("accuracy")
    if not isinstance(acc, dict) or "contrast" not in acc:
        return None
    fmt = lambda c: f"{c['value']:+.1f} [{c['interval'][0]:+.1f}, {c['interval'][1]:+.1f}]"
    forms = "; ".join(f"{f} {fmt(v['contrast'])}" for f, v in acc.get("by_form", {}).items())
    return (f"{r.test_id}: accuracy on the same interventions and questions, shown, not judged: "
            f"{fmt(acc['contrast'])} points ({acc['unmasked']:.0f}% correct unmasked)"
            + (f"; by form: {forms}" if forms else "") + ".")


def _mode_checks(rows: list[ClaimRecord]) -> list[dict]:
    """Fast mode (mask from the question on) against faithful (mask at every position),
    once per model and task."""
    checks = {}
    for r in rows:
        if r.mode_check and isinstance(r.figure, figures.AccuracyByPosition):
            checks.setdefault(f"{r.figure.model} ({r.figure.task})", r.mode_check)
    return [{"subject": subject, **c, "gap": f"{c['difference']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"}
            for subject, cs in checks.items() for c in cs]


def _modes(rows: list[ClaimRecord]) -> dict[str, int]:
    """How many verdicts rest on each masking mode (masked-accuracy checks only)."""
    out: dict[str, int] = {}
    for r in rows:
        if r.mode and r.verdict not in ("skipped", "error"):
            out[r.mode] = out.get(r.mode, 0) + 1
    return dict(sorted(out.items()))


def view(rows: list[ClaimRecord], claims: dict, figs: dict, report_dir: Path, checks: list[str] | None = None) -> dict:
    """Everything the templates show, computed once; a claim's records in check order
    (``checks``, else alphabetical), the paper's checks before those beyond it."""
    cols = columns_of(rows)
    rank = {k: i for i, k in enumerate(checks or ())}
    rows = sorted(rows, key=lambda r: (r.beyond, rank.get(r.check, len(rank)), r.check,
                                       next((i for i, c in enumerate(cols) if c.holds(r)), 0), r.test_id))
    matrix = _matrix(rows, claims, cols)
    return {
        "level": int(100 * next((r.level for r in rows if r.level), 0.95)),
        "columns": cols, "matrix": matrix, "claims": claims,
        "found": [(m, shorten(claims[m.claim].quote), found(m, cols)) for m in matrix if not m.beyond],
        "sections": [_section(cid, claim, mine, figs.get(cid, []), report_dir)
                     for cid, claim in claims.items() if (mine := [r for r in rows if r.claim == cid])],
        "mode_checks": _mode_checks(rows), "modes": _modes(rows),
        "runs": sorted({(r.profile, r.seed, r.run_at[:10]) for r in rows if r.profile}),
        "tests": len(rows), "seconds": sum(r.seconds for r in rows),
        "fmt_value": fmt_value, "fmt_criterion": fmt_criterion, "verdict": _verdict, "finding": _finding,
        "glyph": GLYPH,
    }


# ---------------------------------------------------------------- templates

def _md_cell(text) -> str:
    """Text safe in a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _data_uri(path: str, report_dir: Path) -> str:
    return "data:image/png;base64," + base64.b64encode((Path(report_dir) / path).read_bytes()).decode()


_ENV: dict = {}


def _template(name: str) -> jinja2.Template:
    if not _ENV:
        _ENV["env"] = env = jinja2.Environment(
            loader=jinja2.PackageLoader("ropedim", "templates"), trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html.j2"]))
        env.filters["md"] = _md_cell
    return _ENV["env"].get_template(name)


# ---------------------------------------------------------------- command line

def table() -> tuple[dict, list[str]]:
    """The claims table's claims and check keys, in order, from the checkout this package
    lives in (claims/ sits beside ropedim/): what ``write``'s callers pass."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from claims.table import CHECKS, CLAIMS
    return CLAIMS, [c.key for c in CHECKS]


def main(argv=None) -> int:
    """``python -m ropedim.report`` (re-render) and ``... merge`` (also
    ``scripts/merge_reports.py``); a missing or unreadable input is one error line."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


def _main(argv: list[str]) -> int:
    if argv[:1] == ["merge"]:
        ap = argparse.ArgumentParser(prog="python -m ropedim.report merge",
                                     description="Merge the claim reports of several runs into one.")
        ap.add_argument("inputs", nargs="+", type=Path, help="claims.json files of the runs to merge")
        ap.add_argument("--out", type=Path, required=True, help="report directory to merge into (e.g. reports/)")
        args = ap.parse_args(argv[1:])
        paths = merge(args.inputs, args.out, *table())
        print(f"merged {len(args.inputs)} reports into {args.out}:")
    else:
        ap = argparse.ArgumentParser(prog="python -m ropedim.report",
                                     description="Re-render a claim report (md, html, figures) from its claims.json.")
        ap.add_argument("claims_json", type=Path, help="the report's claims.json (its .figure-data.json beside it)")
        args = ap.parse_args(argv)
        paths = rebuild(args.claims_json, *table())
        print(f"re-rendered {args.claims_json.parent}:")
    for p in paths[:3]:
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
