"""The report plugin end to end: a real pytest run in a subprocess, with xdist."""

import json
import os
import subprocess
import sys
from pathlib import Path

from claims.table import CHECKS, CLAIMS, Toy, check_by_key
from ropedim import report
from ropedim.figures import AccuracyByPosition
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
    assert "| C4a |" in md and "figures/C4a-fig1a.png" in md
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
    gap = [{"variant": "last32", "n": 12, "accuracy_fast": 50.0, "accuracy_faithful": 41.7,
            "same_correctness": 0.75, "same_answer": 0.5}]
    fig = AccuracyByPosition("m", "synthetic", [1, 3, 5], acc, 30, "fast")
    recs = [ClaimRecord(f"{c}-m-{v}", c, f"{c}-{v}", "m", "supported", "", "", value=1.0, interval=[0.5, 1.5],
                        criterion={"kind": "less", "threshold": 0.0, "source": "s"}, figure=fig, mode_check=gap)
            for c, v in (("C5e", "first16"), ("C5f", "last32"))]
    report.write(recs, tmp_path, CLAIMS)
    md = (tmp_path / "claims.md").read_text()
    assert "| ours: m (synthetic, n = 30, fast mode) | first16 | 90.00 | 50.00 | 70.00 | 70.00 |" in md
    assert md.count("| m (synthetic) | last32 | 12 | 50.0 | 41.7 | 75% | 50% |") == 1
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
    import pytest
    with pytest.warns(UserWarning, match="older report format dropped"):
        report.write([ClaimRecord.skipped(c5a, "qwen", "new")], tmp_path, CLAIMS)
    rows = json.loads((tmp_path / "claims.json").read_text())
    assert [r["test_id"] for r in rows] == ["C5a-qwen"] and rows[0]["schema"] == 2
