"""The report: the plugin end to end (a real pytest run in a subprocess, with xdist), the
verdict matrix, re-rendering from claims.json, merging, and the HTML page in a browser."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claims.table import CHECKS, CLAIMS, Toy, check_by_key
from ropedim import report
from ropedim.figures import AccuracyByPosition, HeadProfile
from ropedim.record import ClaimRecord

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, *args):
    env = {**os.environ, "ROPEDIM_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "pytest", "claims", "-k", "toy", "--profile", "smoke",
                           "--report-dir", str(tmp_path / "reports"), "-p", "no:cacheprovider", "-q", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_xdist_run_writes_one_report_with_every_toy_claim(tmp_path):
    out = _run(tmp_path, "-n", "2")
    assert "ropedim claim report" in out.stdout, out.stdout + out.stderr
    rows = json.loads((tmp_path / "reports" / "claims.json").read_text())
    toy_ids = sorted(c.test_id("toy") for c in CHECKS if isinstance(c.subject, Toy))
    assert sorted(r["test_id"] for r in rows) == toy_ids
    for r in rows:
        for key in ("claim", "model", "verdict", "statistic", "value", "interval", "criterion",
                    "paper_value", "config", "seconds", "reason", "measure", "args", "expected"):
            assert key in r, key
        assert r["verdict"] in ("supported", "not supported", "inconclusive")
        assert r["config"]["seeds"] == [0, 1]
        assert r["criterion"]["source"]  # every tolerance says where it comes from
    md = (tmp_path / "reports" / "claims.md").read_text()
    matrix = md.index("| claim | RoPE, toy |")  # the verdict matrix opens the report
    assert matrix < md.index("\n## ") and "| [C4a](#c4a) |" in md[matrix:] and "figures/C4a-fig1a.png" in md
    assert (tmp_path / "reports" / "claims.html").stat().st_size > 5000
    assert (tmp_path / "reports" / "figures" / "C4b-fig1b.png").stat().st_size > 5000


def test_unknown_options_are_refused(tmp_path):
    out = _run(tmp_path, "--model", "llama-9000")
    assert out.returncode != 0 and "known aliases" in out.stderr
    out = _run(tmp_path, "--profile", "huge")
    assert out.returncode != 0 and "unknown profile" in out.stderr


def test_runs_add_up_and_skips_are_listed(tmp_path):
    c5a = check_by_key("C5a")
    report.write([ClaimRecord.skipped(c5a, "llama", "model llama not available")], tmp_path, CLAIMS)
    report.write([ClaimRecord.skipped(c5a, "qwen", "model qwen not available")], tmp_path, CLAIMS)
    rows = json.loads((tmp_path / "claims.json").read_text())
    assert [r["test_id"] for r in rows] == ["C5a-llama", "C5a-qwen"]
    assert all(r["paper_value"] == c5a.paper_value for r in rows)  # one rule for the paper's value
    assert "⏭ skipped" in (tmp_path / "claims.md").read_text()


def test_table2_and_the_fast_vs_faithful_gap_are_shown_once(tmp_path):
    acc = {v: [90.0, 50.0, 70.0] for v in ("none", "first16", "first32", "last16", "last32")}
    from ropedim.qa.mode_check import ModeAgreement  # the real row type: a renamed field fails here
    gap = [ModeAgreement("last32", 12, 50.0, 41.7, -8.3, -20.1, 3.4, 0.75, 0.5).to_json()]
    fig = AccuracyByPosition("m", "synthetic", [1, 3, 5], acc, 30, "fast")
    recs = [ClaimRecord(f"{c}-m-{v}", c, f"{c}-{v}", "m", "supported", "", "", value=1.0, interval=[0.5, 1.5],
                        criterion={"kind": "less", "threshold": 0.0, "source": "s"}, figure=fig, mode_check=gap,
                        mode="fast")
            for c, v in (("C5e", "first16"), ("C5f", "last32"))]
    report.write(recs, tmp_path, CLAIMS)
    md = (tmp_path / "claims.md").read_text()
    assert "| ours: m (synthetic, n = 30, fast mode) | first16 | 90.00 | 50.00 | 70.00 | 70.00 |" in md
    assert md.count("| m (synthetic) | last32 | 12 | 50.0 | 41.7 | -8.3 [-20.1, +3.4] | 75% | 50% |") == 1
    assert "Verdicts by the mode they rest on: fast 2." in md and "✅ supported · fast mode" in md
    again = report.load(tmp_path / "claims.json")  # records and figure payloads round-trip
    assert [r.figure for r in again] == [fig, fig] and again[0].mode_check == gap


def test_reports_of_several_machines_merge_into_one(tmp_path):
    """The documented command: `python scripts/merge_reports.py a/claims.json b/claims.json
    --out reports/`; a test run on both keeps its latest run, each keeps its run time."""
    c5a = check_by_key("C5a")
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    report.write([ClaimRecord.skipped(c5a, "llama", "old run"), ClaimRecord.skipped(c5a, "olmo", "only on a")], a, CLAIMS)
    report.write([ClaimRecord.skipped(c5a, "llama", "new run"), ClaimRecord.skipped(c5a, "qwen", "only on b")], b, CLAIMS)
    report.write([ClaimRecord.skipped(c5a, "smollm2", "already in out")], out, CLAIMS)
    stamps = {r["test_id"]: r["run_at"] for p in (a, b) for r in json.loads((p / "claims.json").read_text())}
    done = subprocess.run([sys.executable, "scripts/merge_reports.py", str(a / "claims.json"), str(b / "claims.json"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {r["test_id"]: r for r in json.loads((out / "claims.json").read_text())}
    assert sorted(rows) == ["C5a-llama", "C5a-olmo", "C5a-qwen", "C5a-smollm2"]
    assert rows["C5a-llama"]["reason"] == "new run" and rows["C5a-olmo"]["reason"] == "only on a"
    assert all(rows[t]["run_at"] == stamps[t] for t in stamps if t != "C5a-llama")
    assert "`C5a-qwen`" in (out / "claims.md").read_text()
    bad = subprocess.run([sys.executable, "scripts/merge_reports.py", str(tmp_path / "none.json"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no such claims.json" in bad.stderr


def test_records_of_an_older_format_are_dropped_not_merged(tmp_path):
    """A committed report from an older version (criterion as a string) must neither crash
    the new run's report nor appear in it."""
    c5a = check_by_key("C5a")
    old = ClaimRecord.skipped(c5a, "llama", "old").to_json(figure=False)
    old.update(criterion="less", schema=1)
    old_no_schema = {k: v for k, v in old.items() if k != "schema"} | {"test_id": "C5a-olmo"}
    (tmp_path / "claims.json").write_text(json.dumps([old, old_no_schema]))
    with pytest.warns(UserWarning, match="older report format dropped"):
        report.write([ClaimRecord.skipped(c5a, "qwen", "new")], tmp_path, CLAIMS)
    rows = json.loads((tmp_path / "claims.json").read_text())
    assert [r["test_id"] for r in rows] == ["C5a-qwen"] and rows[0]["schema"] == 2


ORDER = [c.key for c in CHECKS]


def _measured(key: str, model: str, verdict: str, value: float, figure=None, test_outcome="passed") -> ClaimRecord:
    c = check_by_key(key)
    return ClaimRecord(c.test_id(model), c.claim, c.key, model, verdict, "why", c.paper_value, value=value,
                       interval=[value - 1, value + 1], criterion=c.criterion.to_json(), subject={"task": c.subject.task}
                       if hasattr(c.subject, "task") else {}, beyond=c.beyond, figure=figure, profile="smoke", seed=0,
                       run_at="2026-01-01T00:00:00+00:00", test_outcome=test_outcome)


def _two_models(tmp_path) -> list[ClaimRecord]:
    acc = {v: [90.0, 50.0, 70.0] for v in ("none", "first16", "first32", "last16", "last32")}
    curve = HeadProfile("gemma3", "utility", [0.1, 0.5, 0.9], [[0.1, 0.5, 0.9]], 1, "nq")
    recs = [_measured("C5e-first16-nq", m, "supported", 1.5, AccuracyByPosition(m, "nq", [1, 3, 5], acc, 30, "fast"))
            for m in ("smollm2", "gemma3")]
    recs += [_measured("C5e-first32-nq", "smollm2", "inconclusive", -1.0),
             _measured("C-Fig4-first16-nq", "gemma3", "not supported", -0.2),
             _measured("C-Fig4-contrast-nq", "gemma3", "supported", 0.3),
             _measured("C5b-nq", "gemma3", "supported", 0.8, curve),
             _measured("C5a", "gemma3", "supported", 0.9, test_outcome="failed"),
             _measured("C4a-rope", "toy", "supported", 0.4)]
    report.write(recs, tmp_path, CLAIMS, ORDER)
    return recs


def test_the_matrix_opens_the_report_in_the_papers_order(tmp_path):
    _two_models(tmp_path)
    md = (tmp_path / "claims.md").read_text()
    lines = md.splitlines()
    head = lines.index("| claim | RoPE, toy | gemma3 · nq | smollm2 · nq |")
    assert head < 10  # the first screen
    rows = [ln.split(" | ")[0] for ln in lines[head + 2:] if ln.startswith("| [")]
    assert rows == ["| [C4a](#c4a)", "| [C5a](#c5a)", "| [C5b](#c5b)", "| [C5e](#c5e)", "| [C-Fig4](#c-fig4)",
                    "| [C-Fig4 (beyond the paper)](#c-fig4)"]  # the appendix's Fig. 4 after §5, beyond-the-paper last
    c5e = lines[head + 2 + rows.index("| [C5e](#c5e)")]
    # a glyph per check, the first check's value, a link to the section
    assert c5e == "| [C5e](#c5e) | · | [✅ 1.5 [0.5, 2.5]](#c5e) | [✅❔ 1.5 [0.5, 2.5]](#c5e) |"
    assert "| [C5a](#c5a) | · | [✅ ⚠ 0.9 [-0.1, 1.9]](#c5a) | · |" in md  # the weights belong to each task of the model
    assert "❌ not supported on gemma3 · nq" in md  # what we found, one line per claim
    sections = re.findall(r"^## (\S+)", md, re.M)
    assert sections == ["C4a", "C5a", "C5b", "C5e", "C-Fig4"]
    assert md.index("`C-Fig4-gemma3-first16-nq` |") < md.index("`C-Fig4-gemma3-contrast-nq` (beyond the paper)")
    html = (tmp_path / "claims.html").read_text()
    assert '<table id="matrix">' in html and "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 3  # C5b's two figures, C5e's one: embedded


def test_rerendering_from_claims_json_gives_the_same_files(tmp_path):
    _two_models(tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    before = {p: p.read_bytes() for p in files}
    for p in files:
        if p.name != "claims.json" and p.name != ".figure-data.json":
            p.unlink()
    done = subprocess.run([sys.executable, "-m", "ropedim.report", str(tmp_path / "claims.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p: p.read_bytes() for p in files} == before
    bad = subprocess.run([sys.executable, "-m", "ropedim.report", str(tmp_path / "none.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no such claims.json" in bad.stderr


def test_merge_command_of_the_package(tmp_path):
    c5a = check_by_key("C5a")
    a, out = tmp_path / "a", tmp_path / "out"
    report.write([ClaimRecord.skipped(c5a, "qwen", "on a")], a, CLAIMS)
    done = subprocess.run([sys.executable, "-m", "ropedim.report", "merge", str(a / "claims.json"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["test_id"] for r in json.loads((out / "claims.json").read_text())] == ["C5a-qwen"]


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None)


PROBE = """<script>
window.addEventListener('load', () => {
  const m = document.getElementById('matrix').getBoundingClientRect();
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({images: [...document.images].map(i => i.complete ? i.naturalWidth : 0),
                                    matrix: [m.width, m.height, m.top], viewport: window.innerHeight});
  document.body.appendChild(out);
});
</script>"""


def test_the_html_page_in_a_headless_browser(tmp_path):
    """The matrix is on the first screen and every figure loads (no broken image)."""
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser: install Debian's chromium (scripts/install.sh tries `apt-get install -y "
                    "chromium`) to check the HTML report in a browser")
    _two_models(tmp_path)
    page = tmp_path / "probe.html"
    page.write_text((tmp_path / "claims.html").read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert found, f"the page did not load in {browser}: {done.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(probe["images"]) == 3 and all(w > 100 for w in probe["images"]), probe
    width, height, top = probe["matrix"]
    assert width > 0 and height > 0 and top < probe["viewport"], probe


def test_a_verdict_that_differs_between_unrefuted_readings_is_fragile(tmp_path):
    """Table 1 (C5c) refutes a reading only with 'not supported'; a verdict that differs
    between the readings it does not refute is fragile, in the records and the matrix."""
    from ropedim.robustness import annotate

    def rec(check, verdict, alts):
        c = check_by_key(check)
        r = ClaimRecord(c.test_id("m"), c.claim, c.key, "m", verdict, "", "", value=0.0, interval=[-1.0, 1.0],
                        criterion=c.criterion.to_json(), subject={"type": "QA", "task": "synthetic"},
                        alternatives={k: {"verdict": v, "value": 0.0, "interval": [-1.0, 1.0]} for k, v in alts.items()})
        return r

    c5c = rec("C5c-synthetic", "inconclusive", {"qa-sum": "supported", "qa-mean": "not supported"})
    robust = rec("C5d-first16-synthetic", "supported", {"qa-sum": "supported", "qa-mean": "not supported"})
    fragile = rec("C5d-last16-synthetic", "inconclusive", {"qa-sum": "not supported", "qa-mean": "supported"})
    annotate([c5c, robust, fragile])
    assert robust.readings_passing == ["literal", "qa-sum"] and robust.fragile is False
    assert fragile.fragile is True  # literal: inconclusive, qa-sum: not supported; qa-mean is refuted
    report.write([c5c, robust, fragile], tmp_path, CLAIMS)
    md = (tmp_path / "claims.md").read_text()
    found = {line.split("]")[0].removeprefix("- **["): line for line in md.splitlines() if line.startswith("- **[")}
    assert "(fragile)" in found["C5d"] and " †" in md
