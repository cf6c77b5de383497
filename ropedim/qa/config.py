"""The size and choices of one QA run (one model on one task)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..generation import MODES
from ..utility import UtilityConfig

__all__ = ["TASKS", "QAConfig"]

TASKS = ("synthetic", "nq")  # the project's synthetic retrieval task; NQ-open (the paper's)


@dataclass(frozen=True)
class QAConfig:
    task: str = "synthetic"
    n: int = 30  # questions (the same ones at every gold position)
    k: int = 10  # documents per context
    distractors: str = "bm25"  # NQ contexts built from the oracle file: "bm25" | "random"
    max_new_tokens: int = 100  # Liu et al.'s; decoding stops at the first newline
    mode: str = "table"  # masking: each check's mode ("table"), or all "faithful" (every position) | all "fast"
    fallback: str = "inconclusive"  # fast mode not verified for a mask: "faithful" (recompute) | "inconclusive"
    batch_size: int = 4
    n_analysis: int = 12  # questions (each at every gold position) whose q, K, V feed the head scores
    n_mode_check: int = 10  # questions (at every position) on which fast-mode masks are checked faithfully
    data: tuple[str, ...] = ()  # lost-in-the-middle files to read instead of building contexts
    beyond_full: bool = False  # the beyond-the-paper log-prob checks on every question (True), or on the
    #                            first few their check names (False: CI's budget on a 2-core CPU)
    seed: int = 0
    utility: UtilityConfig = field(default_factory=UtilityConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {TASKS}")
        if self.mode not in ("table", *MODES):
            raise ValueError(f"mode must be 'table' or one of {MODES}, got {self.mode!r}")
        if self.fallback not in ("faithful", "inconclusive"):
            raise ValueError(f"fallback must be 'faithful' or 'inconclusive', got {self.fallback!r}")
        if self.k < 2 or self.n < 1:
            raise ValueError(f"need k >= 2 documents and n >= 1 questions (k={self.k}, n={self.n})")

    def beyond_questions(self, cap: int | None) -> int | None:
        """Questions a beyond-the-paper log-prob check measures: its ``cap``, or all (None)
        where the profile runs them at full size."""
        return None if self.beyond_full else cap

    @property
    def positions(self) -> tuple[int, ...]:
        """Gold positions, 0-based: first, middle, last (1st, 10th, 20th for k = 20)."""
        return (0, (self.k - 1) // 2, self.k - 1)

    def to_dict(self) -> dict:
        """Every field (the Study's cache keys hold it); ``beyond_full`` only where set: it
        decides no step of the Study (the beyond checks' own keys hold their question count),
        so adding it left the keys of every cached run as they were."""
        d = asdict(self)
        if not self.beyond_full:
            del d["beyond_full"]
        return d
