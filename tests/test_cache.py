"""The on-disk cache: atomic entries, one computation per key, work shared by processes."""

import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

from ropedim import cache


def test_cached_computes_once(tmp_path):
    calls, shared = [], []
    for _ in range(2):
        assert cache.cached("k", {"a": 1}, lambda: calls.append(1) or 42, root=tmp_path,
                            unlocked=lambda: shared.append(1)) == 42
    assert calls == [1] and shared == [1]  # the unlocked part runs only while the entry is missing


def _worker(root: str, n: int, out: str):
    """Run n units of 0.3 s each; a unit writes its file once (fails if it exists)."""
    root, done_by = Path(root), []

    def work(i):
        time.sleep(0.3)
        with open(root / f"unit{i}", "x") as f:  # "x": a second run of a unit raises
            f.write(str(os.getpid()))
        done_by.append(i)

    cache.share_work("units", [{"unit": i} for i in range(n)], lambda i: (root / f"unit{i}").exists(),
                     work, root=root)
    assert all((root / f"unit{i}").exists() for i in range(n))  # also the units others did
    Path(out).write_text(",".join(map(str, done_by)))


def test_processes_split_the_units(tmp_path):
    n = 8
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), n, str(tmp_path / f"p{j}"))) for j in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    mine = [[int(i) for i in (tmp_path / f"p{j}").read_text().split(",") if i] for j in range(2)]
    assert sorted(mine[0] + mine[1]) == list(range(n))  # every unit once
    assert mine[0] and mine[1]  # both did some


def test_a_unit_left_undone_is_done_by_the_waiter(tmp_path):
    """A unit whose lock holder dies without finishing it: the waiter does it."""
    spec = {"unit": 0}
    held = threading.Event()

    def other():  # holds the unit's lock for 0.5 s, then "dies" without doing it
        with cache.lock_for(cache.path_for("units", spec, "", tmp_path)):
            held.set()
            time.sleep(0.5)

    t = threading.Thread(target=other)
    t.start()
    held.wait(10)
    done = []
    cache.share_work("units", [spec], lambda i: bool(done), lambda i: done.append(i), root=tmp_path)
    t.join()
    assert done == [0]
