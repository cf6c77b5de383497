"""§5.1 and App. B: the QA set of one model on one task: examples at every gold
position, their prompts in the model's format, and the prompt-length audit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import prompts as P
from .. import qa_data
from ..prompts import Prompt
from ..qa_data import Example
from .config import QAConfig

__all__ = ["PromptAudit", "QASet", "build_qaset"]


@dataclass(frozen=True)
class PromptAudit:
    """Questions whose prompt (plus the answer budget) exceeds the model's context are
    left out at every position (so positions stay paired), and counted."""

    kept: tuple[int, ...]  # question indices used
    skipped_too_long: tuple[int, ...]
    max_len: int
    tokens_min: int
    tokens_mean: float
    tokens_max: int


@dataclass
class QASet:
    cfg: QAConfig
    examples: dict[int, list[Example]]  # gold position -> examples; question i is the same everywhere
    prompts: dict[int, list[Prompt]]
    audit: PromptAudit
    data: str  # where the examples come from, for the report

    @property
    def positions(self) -> tuple[int, ...]:
        return self.cfg.positions

    def kept_prompts(self, pos: int) -> list[Prompt]:
        return [self.prompts[pos][i] for i in self.audit.kept]

    def golds(self, pos: int) -> list[tuple[str, ...]]:
        return [self.examples[pos][i].answers for i in self.audit.kept]


def _examples(cfg: QAConfig) -> dict[int, list[Example]]:
    if cfg.data:
        rows = [ex for path in cfg.data for ex in qa_data.read_litm(path)][: cfg.n]
        return {p: [qa_data.place_gold(ex, p, cfg.k) for ex in rows] for p in cfg.positions}
    if cfg.task == "synthetic":
        return {p: qa_data.synthetic_task(cfg.n, cfg.k, p, seed=cfg.seed) for p in cfg.positions}
    oracle = qa_data.load_oracle()
    return {p: qa_data.build_k_doc(oracle, cfg.k, p, cfg.distractors, seed=cfg.seed, n=cfg.n)
            for p in cfg.positions}


def _describe_data(cfg: QAConfig) -> str:
    if cfg.data:
        return ", ".join(cfg.data)
    if cfg.task == "synthetic":
        return "synthetic retrieval task (ropedim.qa_data.synthetic_task)"
    return f"NQ-open oracle file, {cfg.distractors} distractors ({qa_data.default_oracle_path()})"


def build_qaset(cfg: QAConfig, loaded) -> QASet:
    examples = _examples(cfg)
    prompts = {p: P.build_prompts(exs, loaded.prompt_style, loaded.tokenizer) for p, exs in examples.items()}
    max_len = getattr(loaded.model.config, "max_position_embeddings", 10 ** 9)
    too_long, lengths = set(), []
    for ps in prompts.values():
        a = P.audit(ps, loaded.tokenizer, max_len, reserve=cfg.max_new_tokens)
        too_long |= set(a.too_long)
        lengths += a.lengths
    n = len(next(iter(examples.values())))
    audit = PromptAudit(tuple(i for i in range(n) if i not in too_long), tuple(sorted(too_long)), max_len,
                        min(lengths), float(np.mean(lengths)), max(lengths))
    return QASet(cfg, examples, prompts, audit, _describe_data(cfg))
