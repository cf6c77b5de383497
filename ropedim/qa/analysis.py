"""§5.2-5.3 on the model's own answers: capture q, K, V while the model reads its prompt
plus its answer (the token ids it generated), then the retrieval score of every head
(§5.3, from the question-and-answer rows) and the utility score of every query dim
(Eq. 4, under one reading of ``ropedim.utility.READINGS``), over the analysis examples:
the first ``n`` kept questions, each at every gold position."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import cache
from .. import prompts as P
from ..capture import Capture
from ..hooks import capture
from ..memory import ExamplePlacer
from ..progress import progress
from ..retrieval import average_scores, retrieval_scores
from ..utility import RoPE, Reading, UtilityConfig, prepare, query_rows, utility_scores
from .dataset import QASet

__all__ = ["HeadScores", "AnalysisExample", "analysis_items", "capture_example", "head_scores"]


@cache.storable
@dataclass
class HeadScores:
    retrieval: torch.Tensor  # [L, H] §5.3 score, averaged over the analysis examples
    retrieval_examples: torch.Tensor  # [E, L, H] the same, per example (for bootstraps over examples)
    gold: torch.Tensor  # [L, H] attention of the question-and-answer rows on the gold document alone
    utility: torch.Tensor  # [L, H, Dh] Eq. 4 utility of each query dim (storage order)
    utility_converged: torch.Tensor  # [L, H] the optimisation stopped by its tolerance
    utility_error: torch.Tensor  # [L, H] final error term of the Eq. 4 objective
    n_examples: int
    reading: str  # the reading of Eq. 4 (ropedim.utility.READINGS)


@dataclass
class AnalysisExample:
    capture: Capture  # q (before and after RoPE), K, V at every position
    ids: torch.Tensor  # [1, T] prompt and answer tokens
    context: tuple[int, int]  # token span of instruction + documents
    docs: tuple[tuple[int, int], ...]  # token span of each document
    question_start: int  # first token of the question-and-answer part
    bos_index: int | None  # the begin-of-string token, left out of the retrieval score


def analysis_items(qaset: QASet, n: int) -> list[tuple[int, int]]:
    """(gold position, question) of the first ``n`` kept questions, each at every position."""
    return [(p, i) for i in qaset.audit.kept[:n] for p in qaset.positions]


def capture_example(loaded, prompt: P.Prompt, answer: str) -> AnalysisExample:
    """One forward pass over prompt + answer (``answer.ids`` when it carries the generated
    tokens, else its text tokenised), capturing q before and after RoPE, K and V."""
    tok = P.tokenize_prompt(prompt, loaded.tokenizer)
    ans_ids = list(getattr(answer, "ids", ()) or loaded.tokenizer(answer, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tok.input_ids + ans_ids], device=loaded.device)
    with torch.inference_mode(), capture(loaded.model, keep=("q_pre", "q", "k", "v")) as cap:
        loaded.model(input_ids=ids, logits_to_keep=1)
    bos = 0 if ids[0, 0].item() == getattr(loaded.tokenizer, "bos_token_id", None) else None
    return AnalysisExample(cap, ids, tok.context, tok.docs, tok.question_start, bos)


def head_scores(loaded, qaset: QASet, items: list[tuple[int, int]], answers_none: dict[int, list[str]],
                utility: UtilityConfig, reading: Reading) -> HeadScores:
    """Retrieval and utility scores from the analysis ``items``; ``answers_none``: the
    unmasked answers of the kept questions at each position. Each example is prepared for
    Eq. 4 as it is captured and its capture dropped (long examples fit in memory)."""
    kept = qaset.audit.kept
    rope = RoPE.of(loaded.anatomy) if reading.site == "pre" else None
    place = ExamplePlacer(loaded.model, qaset.audit.tokens_max + qaset.cfg.max_new_tokens)  # GPU, then CPU
    prepared, retrieval, gold = [], [], []
    for j, (pos, i) in enumerate(progress(items, desc=f"capture q, K, V ({reading.name})")):
        ex = capture_example(loaded, qaset.prompts[pos][i], answers_none[pos][kept.index(i)])
        T = ex.ids.shape[1]
        qa_rows = torch.arange(ex.question_start, T)
        retrieval.append(retrieval_scores(ex.capture, qa_rows, ex.context, bos_index=ex.bos_index))
        gold.append(retrieval_scores(ex.capture, qa_rows, ex.docs[qaset.examples[pos][i].gold_index], bos_index=None))
        rows, weights = query_rows(reading, ex.question_start, T, seed=utility.seed * 1_000_003 + j)
        prepared.append(place(prepare((dict(ex.capture), rows), utility, weights, rope)))
        del ex  # the capture is dropped; the prepared copy stays
    u = utility_scores(prepared, utility, reading.reduce, device=loaded.device)
    return HeadScores(average_scores(retrieval), torch.stack(retrieval), average_scores(gold), u.u, u.converged,
                      u.error, len(items), reading.name)
