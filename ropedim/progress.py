"""Progress of long stages: a tqdm bar on a terminal, a few plain lines in a log.

Every long loop of ropedim goes through :func:`progress`. On a terminal (``sys.stderr``
is a tty) it is a tqdm bar. Elsewhere (CI logs, ``> run.log``) a bar's carriage-return
updates would fill the log with thousands of lines, so it prints one line when the stage
starts, one every ``every`` seconds (60 by default) while it runs, and one summary line
with the elapsed seconds when it ends. ``ROPEDIM_PROGRESS=bar|lines|off`` overrides the
choice. :func:`quiet_libraries` does the same for the bars of transformers and the
Hugging Face hub (loading weights, de-quantising GGUF tensors): off in a log.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator

__all__ = ["progress", "Lines", "quiet_libraries"]

ENV = "ROPEDIM_PROGRESS"


class Lines:
    """tqdm's interface (``update``, ``set_postfix``, ``close``, iteration, ``with``) as a
    start line, a line every ``every`` seconds and a summary line, on ``file``."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 disable: bool = False, every: float = 60.0, file=None, **_):
        self.iterable, self.desc, self.disable, self.every = iterable, desc or "progress", disable, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.file, self.n, self.postfix, self.closed = file, 0, "", False
        self.start = self.last = time.perf_counter()
        self._say(f"started{self._of()}")

    def _of(self) -> str:
        return f" ({self.total} steps)" if self.total is not None else ""

    def _say(self, what: str) -> None:
        if not self.disable:
            print(f"[{self.desc}] {what}", file=self.file or sys.stderr, flush=True)

    def _count(self) -> str:
        return f"{self.n}/{self.total}" if self.total is not None else str(self.n)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._say(f"{self._count()} after {now - self.start:.0f} s{self.postfix}")

    def set_postfix(self, refresh: bool = True, **kw) -> None:
        self.postfix = (", " + ", ".join(f"{k}={v}" for k, v in kw.items())) if kw else ""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._say(f"done: {self._count()} in {time.perf_counter() - self.start:.1f} s{self.postfix}")

    def __iter__(self) -> Iterator:
        try:
            for x in self.iterable:
                yield x
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bars() -> bool:
    mode = os.environ.get(ENV, "")
    if mode in ("bar", "lines", "off"):
        return mode == "bar"
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", disable: bool = False,
             **kw):
    """A progress tracker for ``iterable`` (or ``total`` manual ``update`` steps): a tqdm
    bar on a terminal, :class:`Lines` otherwise (see the module's docstring)."""
    disable = disable or os.environ.get(ENV) == "off"
    if _bars():
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, disable=disable, **kw)
    return Lines(iterable, total=total, desc=desc, disable=disable)


def quiet_libraries() -> None:
    """Turn off the progress bars of transformers and huggingface_hub unless bars are on."""
    if _bars():
        return
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        return
    disable_progress_bars()
