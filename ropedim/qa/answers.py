"""Answers of one model to a QA set under query masks (§5.2 Table 1, §5.4 Table 2), and
their correctness as Liu et al. score it (best_subspan_em on the first line)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from .. import generation
from ..metrics import best_subspan_em
from .dataset import QASet

__all__ = ["answer", "answer_under", "correctness"]

Answers = dict[str, dict[int, list[str]]]  # variant -> gold position -> answers of the kept questions


def answer(loaded, qaset: QASet, masks: Mapping[str, torch.Tensor | None], mode: str,
           questions: int | None = None) -> Answers:
    """Answers to the first ``questions`` kept questions (all by default) at every gold
    position, under every mask (None: unmasked). One sweep over all positions, so contexts
    that share a prefix (the documents before the gold one) share its computation."""
    kept = qaset.audit.kept
    n = len(kept) if questions is None else min(questions, len(kept))
    prompts = [p for pos in qaset.positions for p in qaset.kept_prompts(pos)[:n]]
    got = generation.sweep(loaded, loaded.tokenizer, prompts, masks, mode=mode,
                           max_new_tokens=qaset.cfg.max_new_tokens, batch_size=qaset.cfg.batch_size)
    return {v: {pos: got[v][j * n:(j + 1) * n] for j, pos in enumerate(qaset.positions)} for v in masks}


def answer_under(loaded, qaset: QASet, intervention, questions: int | None = None) -> dict[int, list[str]]:
    """Answers to the first ``questions`` kept questions (all by default) at every gold
    position under ``intervention`` (``ropedim.logprob.Intervention``: any hook, at every
    position: the paper's faithful masking), one padded generation per batch, cached per
    prompt and intervention."""
    kept = qaset.audit.kept
    n = len(kept) if questions is None else min(questions, len(kept))
    prompts = [p for pos in qaset.positions for p in qaset.kept_prompts(pos)[:n]]
    got = generation.generate(loaded, loaded.tokenizer, prompts, qaset.cfg.max_new_tokens, qaset.cfg.batch_size,
                              intervention=intervention, desc=f"answers ({intervention.name})")
    return {pos: got[j * n:(j + 1) * n] for j, pos in enumerate(qaset.positions)}


def correctness(answers: Answers, qaset: QASet) -> dict[str, np.ndarray]:
    """{variant: 0/1 correctness [positions, questions]} (best_subspan_em)."""
    return {v: np.array([[best_subspan_em(a, g) for a, g in zip(by_pos[p], qaset.golds(p))]
                         for p in qaset.positions]) for v, by_pos in answers.items()}
