"""On-disk cache for expensive results (trained toys, generations, captures, scores).

An entry is a file named by a hash of everything that determines it. Writes go to a
temporary name in the same folder and are renamed into place (atomic on POSIX); a file
lock per key makes ``pytest -n 4`` compute each entry once while the others wait.
Work that comes in independent units (batches of prompts) is shared instead
(``share_work``): every process that needs it takes the units nobody has claimed, then
waits for the rest.

The cache lives in ``$ROPEDIM_CACHE`` or ``~/.cache/ropedim``; ``--cache-dir`` sets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from filelock import FileLock, Timeout

CACHE_VERSION = 1  # bump when a cached format changes


def default_dir() -> Path:
    return Path(os.environ.get("ROPEDIM_CACHE", Path.home() / ".cache" / "ropedim"))


def key_of(kind: str, spec: Any) -> str:
    """A stable hash of a JSON-able spec (dicts are key-sorted)."""
    blob = json.dumps({"kind": kind, "v": CACHE_VERSION, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def path_for(kind: str, spec: Any, suffix: str = ".pkl", root: Path | None = None) -> Path:
    root = Path(root) if root is not None else default_dir()
    return root / kind / f"{key_of(kind, spec)}{suffix}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def lock_for(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def cached(kind: str, spec: Any, compute: Callable[[], Any], root: Path | None = None,
           enabled: bool = True, unlocked: Callable[[], Any] | None = None) -> Any:
    """Return the pickled result for (kind, spec), computing and storing it once.

    ``unlocked``: the part of the work that processes can share (answers whose batches
    ``share_work`` splits), run before taking the lock when the entry is missing, so
    that every process needing the entry works on it instead of waiting; ``compute``
    then finds those results cached."""
    if not enabled:
        return compute()
    path = path_for(kind, spec, ".pkl", root)
    if path.exists():
        return _load(path)
    if unlocked is not None:
        unlocked()
    with lock_for(path):
        if path.exists():  # another process computed it while we waited
            return _load(path)
        value = compute()
        atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(value, protocol=4)))
        atomic_write(path.with_suffix(".json"),
                     lambda tmp: tmp.write_text(json.dumps(spec, sort_keys=True, default=str)))
        return value


def share_work(kind: str, specs: Sequence[Any], done: Callable[[int], bool],
               work: Callable[[int], None], root: Path | None = None, progress=None) -> None:
    """Run ``work(i)`` for every unit i (identified by ``specs[i]``) that is not ``done(i)``,
    together with any other process running the same units: a unit whose lock another
    process holds is skipped and, once this process has no unclaimed unit left, waited for
    (and done here if that process died before finishing it). ``work`` must store its
    results where ``done`` finds them. ``progress``: a tqdm bar, advanced once per unit."""
    locks = [lock_for(path_for(kind, s, "", root)) for s in specs]
    pending = []
    for i, lock in enumerate(locks):
        if not done(i):
            try:
                lock.acquire(timeout=0)
            except Timeout:  # another process is on it
                pending.append(i)
                continue
            try:
                if not done(i):
                    work(i)
            finally:
                lock.release()
        if progress is not None:
            progress.update()
    for i in pending:
        with locks[i]:
            if not done(i):
                work(i)
        if progress is not None:
            progress.update()


def _load(path: Path) -> Any:
    return pickle.loads(path.read_bytes())
