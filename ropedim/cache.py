"""On-disk cache for expensive results (trained toys, generations, captures, scores).

An entry is a file named by a hash of everything that determines it. Writes go to a
temporary name in the same folder and are renamed into place (atomic on POSIX); a file
lock per key makes ``pytest -n 4`` compute each entry once while the others wait.

The cache lives in ``$ROPEDIM_CACHE`` or ``~/.cache/ropedim``; ``--cache-dir`` sets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

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
           enabled: bool = True) -> Any:
    """Return the pickled result for (kind, spec), computing and storing it once."""
    if not enabled:
        return compute()
    path = path_for(kind, spec, ".pkl", root)
    if path.exists():
        return _load(path)
    with lock_for(path):
        if path.exists():  # another process computed it while we waited
            return _load(path)
        value = compute()
        atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(value, protocol=4)))
        atomic_write(path.with_suffix(".json"),
                     lambda tmp: tmp.write_text(json.dumps(spec, sort_keys=True, default=str)))
        return value


def _load(path: Path) -> Any:
    return pickle.loads(path.read_bytes())
