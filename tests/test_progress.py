"""Progress output: a bar on a terminal, a few lines in a log."""

import io

from ropedim import progress as P


def test_a_log_gets_a_start_and_a_summary_line_not_a_bar(monkeypatch):
    monkeypatch.delenv(P.ENV, raising=False)
    out = io.StringIO()  # not a tty
    monkeypatch.setattr(P.sys, "stderr", out)
    bar = P.progress(total=500, desc="stage")
    for _ in range(500):
        bar.update()
    bar.set_postfix(loss=0.5)
    bar.close()
    bar.close()
    assert list(P.progress(range(3), desc="loop")) == [0, 1, 2]
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert lines[0] == "[stage] started (500 steps)" and lines[1].startswith("[stage] done: 500/500 in ")
    assert lines[1].endswith("s, loss=0.5") and lines[3].startswith("[loop] done: 3/3")


def test_a_line_every_interval_and_off(monkeypatch):
    out = io.StringIO()
    bar = P.Lines(total=3, desc="slow", every=0.0, file=out)
    bar.update()
    assert out.getvalue().splitlines()[1].startswith("[slow] 1/3 after ")
    monkeypatch.setenv(P.ENV, "off")
    monkeypatch.setattr(P.sys, "stderr", out)
    before = out.getvalue()
    with P.progress(total=2, desc="quiet") as b:
        b.update(2)
    assert out.getvalue() == before


def test_every_long_loop_goes_through_the_helper():
    """No tqdm outside ropedim/progress.py: a log gets lines, not carriage-return bars."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    users = [str(p.relative_to(root)) for d in ("ropedim", "fixtures", "claims") for p in (root / d).rglob("*.py")
             if "tqdm" in p.read_text() and p.name != "progress.py"]
    assert users == []
