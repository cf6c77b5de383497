"""On-disk cache for expensive results (trained toys, generations, captures, scores).

An entry is a file named by a hash of everything that determines it (``key_of``). Reading
one runs no code: there is no pickle. ``cached`` entries are safetensors files whose
tensors and numpy arrays are the tensors and whose header holds the rest as JSON (lists,
tuples, dicts, str, int, float, bool, None and the dataclasses registered with
``@storable``, rebuilt field by field); answers (``load``/``store`` with ``.json``) are
JSON files.

Entries check themselves: each holds its kind, its spec, ``VERSIONS`` and a sha256 of all
of that and its tensors. A file that is unreadable or truncated, made for another spec or
version, holds a dataclass whose fields have changed, or whose digest differs, is
recomputed and rewritten; ``summary()`` counts the entries read, computed and recomputed
(and why) in this process, and each claim record's configuration carries it.

A cache that another user could have written is refused, as ssh refuses a key file: an
entry, or a folder on its path, owned by someone other than this user (or root) or
writable by group or others (a sticky folder such as /tmp excepted) is not read
(``UntrustedCache``), unless ``$ROPEDIM_CACHE_TRUST`` (``--cache-trust``) is ``shared``.
Folders are made without group or world write, files readable by all.

Writes go to a temporary name in the same folder and are renamed into place (atomic on
POSIX); a file lock per key makes ``pytest -n 4`` compute each entry once while the others
wait. Work that comes in independent units (batches of prompts) is shared instead
(``share_work``): every process that needs it takes the units nobody has claimed, then
waits for the rest.

The cache lives in ``$ROPEDIM_CACHE`` or ``~/.cache/ropedim``; ``--cache-dir`` sets it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import safetensors
import safetensors.torch
import torch
from filelock import FileLock, Timeout

__all__ = ["CACHE_VERSION", "VERSIONS", "TRUST_ENV", "TRUSTS", "UntrustedCache", "storable", "default_dir",
           "key_of", "path_for", "atomic_write", "lock_for", "cached", "load", "store", "check_trusted",
           "summary", "share_work"]

CACHE_VERSION = 2  # bump when a cached format changes; 2: safetensors + JSON, self-checking (no pickle)
VERSIONS = {"cache": CACHE_VERSION}  # stored in every entry and part of its key
TRUST_ENV = "ROPEDIM_CACHE_TRUST"
TRUSTS = ("user", "shared")

log = logging.getLogger(__name__)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class UntrustedCache(PermissionError):
    """A cache path that a user other than this one could have written."""


class _Stale(Exception):
    """An entry that is missing or must be recomputed; ``args[0]`` says why."""


def default_dir() -> Path:
    return Path(os.environ.get("ROPEDIM_CACHE", Path.home() / ".cache" / "ropedim"))


def _plain(spec: Any) -> Any:
    """The spec as its JSON form (what the key hashes and the entry stores)."""
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


def key_of(kind: str, spec: Any) -> str:
    """A stable hash of a JSON-able spec (dicts are key-sorted)."""
    blob = json.dumps({"kind": kind, "versions": VERSIONS, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def path_for(kind: str, spec: Any, suffix: str = ".safetensors", root: Path | None = None) -> Path:
    root = Path(root) if root is not None else default_dir()
    return root / kind / f"{key_of(kind, spec)}{suffix}"


# ---------------------------------------------------------------- trust
def _trust() -> str:
    mode = os.environ.get(TRUST_ENV, "user")
    if mode not in TRUSTS:
        raise ValueError(f"${TRUST_ENV}={mode!r}; choose one of {', '.join(TRUSTS)}")
    return mode


def _writable_by_others(st: os.stat_result, uid: int) -> str | None:
    """Why a file or folder with this stat could have been written by another user, or None."""
    if st.st_uid not in (uid, 0):
        return f"owned by uid {st.st_uid}"
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        return None  # sticky (like /tmp): others may add names, not replace ours
    who = [name for name, bit in (("group", 0o020), ("others", 0o002)) if st.st_mode & bit]
    return f"writable by {' and '.join(who)} (mode {stat.S_IMODE(st.st_mode):o})" if who else None


def check_trusted(path: Path) -> None:
    """Raise ``UntrustedCache`` if ``path`` (where it exists) or a folder above it could have
    been written by another user; a no-op with ``$ROPEDIM_CACHE_TRUST=shared``."""
    if _trust() == "shared":
        return
    real = Path(os.path.realpath(path))
    for part in [real, *real.parents]:
        try:
            why = _writable_by_others(os.stat(part), os.geteuid())
        except FileNotFoundError:
            continue
        if why:
            raise UntrustedCache(
                f"ropedim cache: {part} is {why}, so another user could have written what would be read "
                f"from {path}; it is not read. Make it yours alone (`chmod go-w`, `chown`), choose another "
                f"--cache-dir, or accept a shared cache deliberately with --cache-trust shared "
                f"(${TRUST_ENV}=shared): anyone who can write there can then plant results.")


# ---------------------------------------------------------------- values <-> JSON tree + tensors
_TYPES: dict[str, type] = {}


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def storable(cls: type) -> type:
    """Class decorator: allow the dataclass ``cls`` in cached values (its init fields are
    stored and passed back to ``cls`` on reading)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"@storable: {cls.__name__} is not a dataclass")
    _TYPES[_type_name(cls)] = cls
    return cls


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _encode(x: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """A JSON tree of ``x``; its tensors and arrays are added to ``tensors``."""
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is list:
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(x)]
    if type(x) is tuple:
        return {"$": "tuple", "items": _encode(list(x), tensors, where)}
    if type(x) is dict:
        return {"$": "dict", "items": [[_encode(k, tensors, f"{where} key"), _encode(v, tensors, f"{where}[{k!r}]")]
                                      for k, v in x.items()]}
    if isinstance(x, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = x.detach().to("cpu", copy=True).contiguous()
        return {"$": "tensor", "name": name}
    if isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind in "biuf":  # bool, int, float
        name = str(len(tensors))
        tensors[name] = torch.from_numpy(np.array(x))  # a contiguous copy; 0-d for a scalar
        return {"$": "numpy", "name": name, "scalar": isinstance(x, np.generic)}
    if _TYPES.get(_type_name(type(x))) is type(x):
        return {"$": "dataclass", "type": _type_name(type(x)),
                "fields": {f: _encode(getattr(x, f), tensors, f"{where}.{f}") for f in _init_fields(type(x))}}
    raise TypeError(f"cache: cannot store {type(x).__name__} at {where}: a cached value holds tensors, numpy "
                    f"arrays, list, tuple, dict, str, int, float, bool, None and dataclasses registered "
                    f"with @ropedim.cache.storable")


def _decode(t: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(t, list):
        return [_decode(v, tensors) for v in t]
    if not isinstance(t, dict):
        return t
    tag = t["$"]
    if tag == "tuple":
        return tuple(_decode(t["items"], tensors))
    if tag == "dict":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in t["items"]}
    if tag == "tensor":
        return tensors[t["name"]]
    if tag == "numpy":
        a = tensors[t["name"]].numpy()
        return a[()] if t["scalar"] else a
    if tag == "dataclass":
        cls = _TYPES.get(t["type"])
        if cls is None or sorted(_init_fields(cls)) != sorted(t["fields"]):
            raise _Stale(f"type changed: {t['type']}")
        return cls(**{f: _decode(v, tensors) for f, v in t["fields"].items()})
    raise _Stale("unreadable")  # an unknown tag


# ---------------------------------------------------------------- entries
_MISSING = object()
_COUNTS: Counter = Counter()  # "read", "computed", ("recomputed", "kind: reason")
_STALE: dict[Path, str] = {}  # entries found bad in this process, until rewritten


def summary() -> dict:
    """This process's cache use: entries read, computed (written), and recomputed because the
    file there was bad, by "kind: reason"."""
    recomputed = dict(sorted((k[1], n) for k, n in _COUNTS.items() if isinstance(k, tuple)))
    return {"trust": _trust(), "read": _COUNTS["read"], "computed": _COUNTS["computed"], "recomputed": recomputed}


def _digest(head: dict, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the header (without its digest) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in head.items() if k != "digest"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _read(path: Path, kind: str, spec: Any) -> Any:
    """The value stored at ``path`` for (kind, spec); ``_Stale`` if missing or bad."""
    if not path.exists():
        raise _Stale("missing")
    try:
        if path.suffix == ".json":
            head, tensors = json.loads(path.read_bytes()), {}
        else:
            with safetensors.safe_open(str(path), framework="pt") as f:
                head, tensors = json.loads(f.metadata()["ropedim"]), {k: f.get_tensor(k) for k in f.keys()}
        ok = head["digest"] == _digest(head, tensors)
    except (safetensors.SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _Stale("unreadable") from e
    if not ok:
        raise _Stale("digest mismatch")
    if head["versions"] != VERSIONS:
        raise _Stale("version mismatch")
    if head["kind"] != kind or head["spec"] != _plain(spec):
        raise _Stale("spec mismatch")
    try:
        return _decode(head["value"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise _Stale("unreadable") from e


def load(kind: str, spec: Any, default: Any = None, suffix: str = ".safetensors", root: Path | None = None) -> Any:
    """The stored value for (kind, spec), or ``default`` when it is missing or bad (a bad
    entry is counted as recomputed when ``store`` rewrites it)."""
    path = path_for(kind, spec, suffix, root)
    check_trusted(path)
    try:
        value = _read(path, kind, spec)
    except _Stale as e:
        if e.args[0] != "missing":
            if path not in _STALE:
                log.warning("cache: recomputing %s (%s)", path, e.args[0])
            _STALE[path] = e.args[0]
        return default
    _STALE.pop(path, None)
    _COUNTS["read"] += 1
    return value


def store(kind: str, spec: Any, value: Any, suffix: str = ".safetensors", root: Path | None = None) -> None:
    """Write ``value`` as the entry for (kind, spec); ``.json`` entries hold no tensors."""
    path = path_for(kind, spec, suffix, root)
    tensors: dict[str, torch.Tensor] = {}
    head = {"kind": kind, "spec": _plain(spec), "versions": VERSIONS, "value": _encode(value, tensors, "value")}
    head["digest"] = _digest(head, tensors)
    if suffix == ".json":
        if tensors:
            raise TypeError(f"cache: {kind} entries are JSON and hold no tensors or arrays")
        blob = json.dumps(head).encode()
    else:
        blob = safetensors.torch.save(tensors, metadata={"ropedim": json.dumps(head)})
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))
    _COUNTS["computed"] += 1
    if path in _STALE:
        _COUNTS["recomputed", f"{kind}: {_STALE.pop(path)}"] += 1


def cached(kind: str, spec: Any, compute: Callable[[], Any], root: Path | None = None,
           enabled: bool = True, unlocked: Callable[[], Any] | None = None) -> Any:
    """Return the stored result for (kind, spec), computing and storing it once.

    ``unlocked``: the part of the work that processes can share (answers whose batches
    ``share_work`` splits), run before taking the lock when the entry is missing, so
    that every process needing the entry works on it instead of waiting; ``compute``
    then finds those results cached."""
    if not enabled:
        return compute()
    value = load(kind, spec, _MISSING, root=root)
    if value is not _MISSING:
        return value
    if unlocked is not None:
        unlocked()
    with lock_for(path_for(kind, spec, root=root)):
        value = load(kind, spec, _MISSING, root=root)  # another process may have computed it
        if value is _MISSING:
            value = compute()
            store(kind, spec, value, root=root)
        return value


# ---------------------------------------------------------------- files, locks, shared work
def _mkdirs(folder: Path) -> None:
    """Make ``folder`` and its missing parents without group or world write, whatever the umask."""
    for p in reversed([folder, *folder.parents]):
        if not p.exists():
            try:
                p.mkdir(mode=0o755)
            except FileExistsError:  # another process made it
                pass


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place
    (readable by all, as the umask allows; writable by this user only)."""
    _mkdirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def lock_for(path: Path) -> FileLock:
    _mkdirs(path.parent)
    return FileLock(str(path) + ".lock")


def share_work(kind: str, specs: Sequence[Any], done: Callable[[int], bool],
               work: Callable[[int], None], root: Path | None = None, progress=None) -> None:
    """Run ``work(i)`` for every unit i (identified by ``specs[i]``) that is not ``done(i)``,
    together with any other process running the same units: a unit whose lock another
    process holds is skipped and, once this process has no unclaimed unit left, waited for
    (and done here if that process died before finishing it). ``work`` must store its
    results where ``done`` finds them. ``progress``: a ``ropedim.progress`` tracker, advanced once per unit."""
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
