"""The on-disk cache: atomic entries, one computation per key, work shared by processes;
entries that run no code when read, check themselves, and are refused when another user
could have written them."""

import hashlib
import json
import math
import multiprocessing as mp
import argparse
import os
import pickle
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from ropedim import cache
from ropedim.models import gguf

ROOT = Path(__file__).resolve().parents[1]


@cache.storable
@dataclass(frozen=True)
class Inner:
    name: str
    score: float


@cache.storable
@dataclass
class Outer:
    t: torch.Tensor
    a: np.ndarray
    inner: list[Inner]
    by_key: dict = field(default_factory=dict)
    derived: int = field(init=False, default=0)  # not stored: rebuilt by __post_init__

    def __post_init__(self):
        self.derived = len(self.inner)


def _value():
    return Outer(torch.arange(6, dtype=torch.float32).reshape(2, 3), np.array([[True, False]]),
                 [Inner("a", math.nan), Inner("b", -0.0)],
                 {1: (np.float32(0.5), None), "x": [1, "2", 3.0], (2, "y"): torch.tensor(7, dtype=torch.int8)})


def _same(x, y) -> bool:
    """Equal values of equal types (tensors and arrays by dtype, shape and bits)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, torch.Tensor):
        return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, (np.ndarray, np.generic)):
        return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(map(_same, x, y))
    if isinstance(x, dict):
        return list(x) == list(y) and all(_same(x[k], y[k]) for k in x)
    if hasattr(x, "__dataclass_fields__"):
        return all(_same(getattr(x, f), getattr(y, f)) for f in x.__dataclass_fields__)
    if isinstance(x, float):
        return math.copysign(1, x) == math.copysign(1, y) and (x == y or (math.isnan(x) and math.isnan(y)))
    return x == y


@pytest.fixture
def counts(monkeypatch):
    """A fresh count of this process's cache use, and the default trust."""
    monkeypatch.setattr(cache, "_COUNTS", Counter())
    monkeypatch.setattr(cache, "_STALE", {})
    monkeypatch.delenv(cache.TRUST_ENV, raising=False)


def _once(root, value=_value, spec=None):
    """``cached`` with a compute that records its calls: (result, calls)."""
    calls = []
    got = cache.cached("k", spec or {"a": 1}, lambda: calls.append(1) or value(), root=root)
    return got, len(calls)


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


# ---------------------------------------------------------------- entries
def test_values_round_trip(tmp_path, counts):
    """Tensors, arrays, numpy scalars, tuples, non-str keys, NaN, -0.0 and registered
    dataclasses come back with their types; nothing is pickled."""
    first, calls = _once(tmp_path)
    again, calls_again = _once(tmp_path)
    assert (calls, calls_again) == (1, 0) and _same(again, _value()) and again.derived == 2
    path = cache.path_for("k", {"a": 1}, root=tmp_path)
    assert path.suffix == ".safetensors" and sorted(p.name for p in path.parent.iterdir()) == \
        [path.name, path.name + ".lock"]
    assert cache.summary() == {"trust": "user", "read": 1, "computed": 1, "recomputed": {}}


class _Plain:
    pass


@pytest.mark.parametrize("bad", [_Plain(), np.array(["a"]), {1, 2}])
def test_what_the_cache_cannot_store_is_an_error(tmp_path, bad):
    with pytest.raises(TypeError, match=rf"{type(bad).__name__} at value\[0\]\['x'\].*@ropedim.cache.storable"):
        cache.cached("k", {"a": 1}, lambda: [{"x": bad}], root=tmp_path)


class _RunsCode:
    """Unpickling this creates ``marker``: what a planted pickle could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _old_key(kind, spec) -> str:
    """The key of cache version 1 (pickles)."""
    blob = json.dumps({"kind": kind, "v": 1, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@pytest.mark.parametrize("name", ["entry", "entry.pkl", "old key.pkl"])
def test_a_planted_pickle_never_runs(tmp_path, counts, name):
    spec, marker = {"a": 1}, tmp_path / "ran"
    blob = pickle.dumps(_RunsCode(marker))
    pickle.loads(pickle.dumps(_RunsCode(tmp_path / "proof")))  # the plant works when unpickled
    assert (tmp_path / "proof").exists()
    path = {"entry": cache.path_for("k", spec, root=tmp_path),
            "entry.pkl": cache.path_for("k", spec, ".pkl", root=tmp_path),
            "old key.pkl": tmp_path / "k" / f"{_old_key('k', spec)}.pkl"}[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    got, calls = _once(tmp_path)
    assert calls == 1 and _same(got, _value()) and not marker.exists()
    assert cache.summary()["recomputed"] == ({"k: unreadable": 1} if name == "entry" else {})


def _tamper_header(path: Path) -> None:
    """Change a stored number, keeping the digest."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        head, tensors = json.loads(f.metadata()["ropedim"]), {k: f.get_tensor(k) for k in f.keys()}
    head["value"]["fields"]["inner"][1]["fields"]["score"] = 0.25
    path.write_bytes(safetensors.torch.save(tensors, metadata={"ropedim": json.dumps(head)}))


def _flip_last_byte(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[-1] ^= 1
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(p.read_bytes()[:-5]), "unreadable"),  # truncated
    (lambda p: p.write_bytes(b""), "unreadable"),
    (_tamper_header, "digest mismatch"),
    (_flip_last_byte, "digest mismatch"),  # a tensor's bytes
])
def test_a_damaged_entry_is_recomputed(tmp_path, counts, damage, why):
    _once(tmp_path)
    damage(cache.path_for("k", {"a": 1}, root=tmp_path))
    got, calls = _once(tmp_path)
    assert calls == 1 and _same(got, _value())
    assert _once(tmp_path)[1] == 0  # rewritten
    assert cache.summary() == {"trust": "user", "read": 1, "computed": 2, "recomputed": {f"k: {why}": 1}}


def test_an_entry_for_another_spec_or_changed_type_is_recomputed(tmp_path, counts, monkeypatch):
    _once(tmp_path, spec={"a": 2})
    path = cache.path_for("k", {"a": 1}, root=tmp_path)
    path.write_bytes(cache.path_for("k", {"a": 2}, root=tmp_path).read_bytes())  # copied under another key
    assert _once(tmp_path)[1] == 1

    @dataclass(frozen=True)
    class Grown(Inner):  # Inner with a field added since the entry was written
        extra: int = 0

    Grown.__qualname__, Grown.__module__ = Inner.__qualname__, Inner.__module__
    monkeypatch.setitem(cache._TYPES, cache._type_name(Inner), Grown)
    assert _once(tmp_path, value=lambda: Grown("c", 1.0)) == (Grown("c", 1.0), 1)
    assert cache.summary()["recomputed"] == {"k: spec mismatch": 1, f"k: type changed: {cache._type_name(Inner)}": 1}


def test_json_entries_check_themselves(tmp_path, counts):
    spec = {"prompt": "p"}
    cache.store("generation", spec, "an answer", suffix=".json", root=tmp_path)
    assert cache.load("generation", spec, suffix=".json", root=tmp_path) == "an answer"
    path = cache.path_for("generation", spec, ".json", tmp_path)
    path.write_text(path.read_text().replace("an answer", "a planted answer"))
    assert cache.load("generation", spec, suffix=".json", root=tmp_path) is None
    with pytest.raises(TypeError, match="hold no tensors"):
        cache.store("generation", spec, torch.ones(1), suffix=".json", root=tmp_path)
    cache.store("generation", spec, "an answer", suffix=".json", root=tmp_path)
    assert cache.summary()["recomputed"] == {"generation: digest mismatch": 1}


# ---------------------------------------------------------------- trust
def test_what_others_could_write_is_refused(tmp_path, counts, monkeypatch):
    _once(tmp_path)
    folder = cache.path_for("k", {"a": 1}, root=tmp_path).parent
    folder.chmod(0o777)
    with pytest.raises(cache.UntrustedCache, match=rf"{folder} is writable by group and others.*--cache-trust shared"):
        _once(tmp_path)
    monkeypatch.setenv(cache.TRUST_ENV, "shared")
    got, calls = _once(tmp_path)
    assert calls == 0 and _same(got, _value()) and cache.summary()["trust"] == "shared"
    monkeypatch.delenv(cache.TRUST_ENV)
    folder.chmod(0o1777)  # sticky, like /tmp: others cannot replace our entries
    assert _once(tmp_path)[1] == 0
    cache.path_for("k", {"a": 1}, root=tmp_path).chmod(0o664)
    with pytest.raises(cache.UntrustedCache, match="writable by group .mode 664"):
        _once(tmp_path)


def _stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("mode, owner, why", [
    (0o040755, "me", None), (0o040755, "root", None), (0o100644, "me", None),
    (0o040755, "other", "owned by uid 4242"), (0o041777, "other", "owned by uid 4242"),
    (0o040775, "me", "writable by group (mode 775)"), (0o100646, "me", "writable by others (mode 646)"),
    (0o041777, "root", None),  # /tmp
])
def test_the_trust_rule(mode, owner, why):
    me = 1000
    assert cache._writable_by_others(_stat(mode, {"me": me, "root": 0, "other": 4242}[owner]), me) == why


def test_a_snapshot_with_a_file_others_could_write_is_refused(tmp_path, counts):
    (tmp_path / "config.json").write_text("{}")
    assert gguf._trusted(tmp_path) == tmp_path
    (tmp_path / "config.json").chmod(0o666)
    with pytest.raises(cache.UntrustedCache, match="config.json is writable by group and others"):
        gguf._trusted(tmp_path)


def test_the_run_refuses_an_untrusted_cache_up_front(tmp_path, monkeypatch):
    """``--cache-dir`` in a world-writable folder: one usage error before any test runs;
    ``--cache-trust shared`` accepts it (and the workers inherit it)."""
    from fixtures import options

    monkeypatch.setenv("ROPEDIM_CACHE", str(tmp_path))  # restored after the test, as is the trust
    monkeypatch.delenv(cache.TRUST_ENV, raising=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    config = pytest.Config.__new__(pytest.Config)  # only what pytest_configure reads
    config.stash = pytest.Stash()
    config.option = argparse.Namespace()  # no xdist: one process
    given = {"--profile": "smoke", "--model": None, "--report-dir": str(tmp_path), "--cache-dir": str(shared),
             "--seed": 0, "--qa-data": None, "--task": None, "--cache-trust": None, "--device": None}
    config.getoption = lambda name: given.get(name)  # options not listed: their default (None)
    with pytest.raises(pytest.UsageError, match=rf"{shared} is writable by group and others.*--cache-trust shared"):
        options.pytest_configure(config)
    given["--cache-trust"] = "shared"
    options.pytest_configure(config)
    assert os.environ[cache.TRUST_ENV] == "shared" and config.stash[options.settings_key].profile.name == "smoke"


# ---------------------------------------------------------------- processes
def _compute_once(root: str, out: str):
    """``cached`` with a compute of 0.5 s that fails if it runs twice (its marker exists)."""
    def compute():
        with open(Path(root) / "computed", "x"):
            pass
        time.sleep(0.5)
        return {"pid": os.getpid(), "t": torch.arange(4)}

    got = cache.cached("k", {"a": 1}, compute, root=Path(root))
    Path(out).write_text(f"{got['pid']}:{got['t'].tolist()}")


def test_processes_compute_an_entry_once(tmp_path):
    """Four processes (``-n 4``) asking for one entry: one computes, the others read it."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_compute_once, args=(str(tmp_path), str(tmp_path / f"p{j}"))) for j in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len({(tmp_path / f"p{j}").read_text() for j in range(4)}) == 1  # the same value, from one process
