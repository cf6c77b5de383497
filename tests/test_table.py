"""The claims table keeps its promise: known findings are checked outcomes, a crash is an
error (in the run and in the report), a changed verdict fails in either direction, and a
check added to the table is collected without touching a test file."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from claims import findings, table
from claims.checks import Check, Toy
from claims.findings import FINDINGS, Finding, expected
from ropedim.verdict import Criterion

ROOT = Path(__file__).resolve().parents[1]


def test_known_findings_name_real_checks_models_and_profiles(monkeypatch):
    keys = {c.key for c in table.CHECKS}
    assert {k for k, _, _ in FINDINGS} <= keys
    monkeypatch.setitem(FINDINGS, ("C5z-nq", "smollm2", "default"), Finding("inconclusive", "typo"))
    with pytest.raises(KeyError, match="unknown check 'C5z-nq'; known: .*C5b-nq"):
        table.validate()
    monkeypatch.delitem(FINDINGS, ("C5z-nq", "smollm2", "default"))
    monkeypatch.setitem(FINDINGS, ("C5b-nq", "smollm3", "default"), Finding("inconclusive", "typo"))
    with pytest.raises(KeyError, match="unknown model 'smollm3'; known: .*smollm2"):
        table.validate()


def test_unknown_measure_argument_or_figure_fails_at_import(monkeypatch):
    good = next(c for c in table.CHECKS if c.claim == "C4a")
    for bad, match in ((dict(measure="toy_weight_ratoi"), "unknown measure 'toy_weight_ratoi'; known: .*toy_weight_ratio"),
                       (dict(args={**good.args, "fracton": 0.125}), "do not fit measure toy_weight_ratio"),
                       (dict(alternatives={"x": {"int": "1/d"}}), "do not fit measure toy_weight_ratio"),
                       (dict(measure="wq_trend", args={"scaled": False}, alternatives={}),
                        "returns HeadProfile, figure fig1a draws ToyCurves")):
        monkeypatch.setattr(table, "CHECKS", [Check(**{**good.__dict__, **bad})])
        with pytest.raises((KeyError, TypeError), match=match):
            table.validate()


def test_the_paper_profile_amends_the_default_findings(monkeypatch):
    inc, held = Finding("inconclusive", "at the default size"), Finding("supported", "holds at the paper's size")
    monkeypatch.setitem(FINDINGS, ("C5b-nq", "gemma3", "default"), inc)
    monkeypatch.setitem(FINDINGS, ("C5b-nq", "gemma3", "paper"), held)
    monkeypatch.setitem(FINDINGS, ("C5c-nq", "gemma3", "default"), inc)
    assert expected("C5b-nq", "gemma3", "default") == inc
    assert expected("C5b-nq", "gemma3", "paper") == held
    assert expected("C5c-nq", "gemma3", "paper") == inc  # not re-run at the paper's size: kept
    assert expected("C4a-rope", "toy", "default") == findings.THE_CLAIM
    assert expected("C5d-first16-nq", "qwen", "default").outcomes == ("not supported", "inconclusive")


PLUGIN = '''
from claims import checks, findings
from claims.checks import Check, Toy
from ropedim import measures, stats
from ropedim.verdict import Criterion

def planted(runs, *, value, seed=0):
    """A measure whose estimate is planted; None crashes."""
    if value is None:
        raise RuntimeError("planted crash inside a known-finding check")
    return measures.Measurement(stats.Estimate(value, value - 0.5, value + 0.5), measures._toy_curves(runs["1"]["rope"]))

measures.MEASURES.register("planted", measures.Measure(planted, measures.ToyCurves))
for name, value in {"crash": None, "up": 1.0, "down": -1.0, "same": 0.0}.items():
    c = Check("C4a", "planted-" + name, Toy(), "planted", "planted statistic",
              Criterion("greater", 0.0, "planted"), {"value": value})
    checks.CHECKS.append(c)  # a check added to the table; no test file is touched
    findings.FINDINGS[c.key, "toy", "default"] = findings.Finding("inconclusive", "planted finding")
'''


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """`pytest claims -k planted` with four planted checks, all known as "inconclusive":
    one crashes, one measures "supported", one "not supported", one "inconclusive"; an
    old report already holds a record of the crashing check."""
    tmp = tmp_path_factory.mktemp("planted")
    (tmp / "planted_plugin.py").write_text(PLUGIN)
    reports = tmp / "reports"
    reports.mkdir()
    old = {"test_id": "C4a-toy-planted-crash", "claim": "C4a", "check": "C4a-planted-crash", "model": "toy",
           "verdict": "supported", "reason": "an old record", "paper_value": "", "value": 9.0, "interval": [8, 10]}
    (reports / "claims.json").write_text(json.dumps([old]))
    env = {**os.environ, "ROPEDIM_CACHE": str(tmp / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "pytest", "claims", "-k", "planted", "--profile", "smoke",
                          "--report-dir", str(reports), "-p", "planted_plugin", "-p", "no:cacheprovider", "-q",
                          "-rA"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    rows = {r["test_id"]: r for r in json.loads((reports / "claims.json").read_text())}
    return out, rows, (reports / "claims.md").read_text()


def test_a_check_added_to_the_table_is_collected(planted_run):
    out, rows, _ = planted_run
    assert {f"C4a-toy-planted-{n}" for n in ("crash", "up", "down", "same")} <= set(rows), out.stdout


def test_a_crash_is_an_error_in_the_run_and_in_the_report(planted_run):
    out, rows, md = planted_run
    assert out.returncode == 1
    assert "FAILED claims/test_claims.py::test_toy_claim[C4a-toy-planted-crash]" in out.stdout
    assert "xfail" not in out.stdout
    r = rows["C4a-toy-planted-crash"]
    assert r["verdict"] == "error" and "planted crash" in r["reason"] and r["value"] is None  # not the old record
    assert "| `C4a-toy-planted-crash` |" in md and "💥 error" in md


def test_a_changed_verdict_fails_in_either_direction(planted_run):
    out, rows, md = planted_run
    for name, verdict in (("up", "supported"), ("down", "not supported")):
        assert f"FAILED claims/test_claims.py::test_toy_claim[C4a-toy-planted-{name}]" in out.stdout
        r = rows[f"C4a-toy-planted-{name}"]
        assert (r["verdict"], r["test_outcome"]) == (verdict, "failed")
        assert r["expected"] == {"outcomes": ["inconclusive"], "why": "planted finding"}
    assert "PASSED claims/test_claims.py::test_toy_claim[C4a-toy-planted-same]" in out.stdout
    assert rows["C4a-toy-planted-same"]["test_outcome"] == "passed"
    assert "(the known finding changed)" in md
    assert "3 failed, 1 passed" in out.stdout


def test_malformed_qa_data_errors_with_file_and_line(tmp_path):
    """`--qa-data` with a malformed line: the QA claims error (never an expected outcome)
    and the message names the file and the line."""
    bad = tmp_path / "bad.jsonl"
    good = {"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "a", "isgold": True},
                                                          {"title": "u", "text": "b", "isgold": False}]}
    bad.write_text(json.dumps(good) + "\n{not json\n")
    env = {**os.environ, "ROPEDIM_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "pytest", "claims", "-k", "C5c and nq", "--model", "tiny-llama",
                          "--qa-data", str(bad), "--report-dir", str(tmp_path / "reports"), "-p", "no:cacheprovider",
                          "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "1 failed" in out.stdout and "xfail" not in out.stdout, out.stdout
    assert f"{bad}:2: not valid JSON" in out.stdout
    rows = json.loads((tmp_path / "reports" / "claims.json").read_text())
    assert [(r["test_id"], r["verdict"]) for r in rows] == [("C5c-tiny-llama-nq", "error")]
    assert f"{bad}:2" in rows[0]["reason"]


def test_a_profile_sizes_a_model_apart_only_where_it_says():
    from ropedim.profiles import get
    p = get("default")
    assert p.qa_config("synthetic", model="qwen2.5-1.5b").n == 4  # projected to fit an hour on 2 cores
    assert p.qa_config("synthetic", model="qwen2.5-1.5b").k == p.qa_config("synthetic").k  # the rest as the profile
    assert p.qa_config("synthetic", model="smollm2").n == p.qa_config("synthetic").n == 30
    assert p.qa_config("nq", model="qwen2.5-1.5b").n == p.qa_config("nq").n


def test_the_paper_profile_runs_the_beyond_log_prob_checks_on_every_question():
    from ropedim.profiles import get
    for task in ("synthetic", "nq"):
        assert get("default").qa_config(task).beyond_questions(15) == 15  # CI's budget: the check's own cap
        assert get("paper").qa_config(task).beyond_questions(15) is None  # every question
        assert get("paper-fast").qa_config(task).beyond_questions(10) is None
    assert "beyond_full" not in get("default").qa_config("synthetic").to_dict()  # cached runs keep their keys
