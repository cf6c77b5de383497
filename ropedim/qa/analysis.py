"""§5.2-5.3 on the model's own answers: capture q, K, V while the model reads its prompt
plus its answer, then the retrieval score of every head (§5.3) and the utility score of
every query dim (Eq. 4), over the analysis examples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import prompts as P
from ..capture import Capture
from ..hooks import capture
from ..memory import ExamplePlacer
from ..retrieval import average_scores, retrieval_scores
from ..utility import UtilityConfig, prepare, utility_scores
from .dataset import QASet

__all__ = ["HeadScores", "AnalysisExample", "analysis_items", "capture_example", "head_scores"]


@dataclass
class HeadScores:
    retrieval: torch.Tensor  # [L, H] §5.3 score, averaged over the analysis examples
    utility: torch.Tensor  # [L, H, Dh] Eq. 4 utility of each query dim (storage order)
    utility_converged: torch.Tensor  # [L, H] the optimisation stopped by its tolerance
    utility_error: torch.Tensor  # [L, H] final squared error of the head output
    n_examples: int


@dataclass
class AnalysisExample:
    capture: Capture  # q at the question-and-answer rows, K, V at every position
    ids: torch.Tensor  # [1, T] prompt and answer tokens
    context: tuple[int, int]  # token span of instruction + documents
    question_start: int  # first token of the question-and-answer part
    bos_index: int | None  # the begin-of-string token, left out of the retrieval score


def analysis_items(qaset: QASet, n: int) -> list[tuple[int, int]]:
    """The first ``n`` (gold position, question) pairs, round-robin over positions."""
    kept, ps = qaset.audit.kept, qaset.positions
    items = [(ps[j % len(ps)], kept[j // len(ps)]) for j in range(len(ps) * len(kept))]
    return items[:n]


def capture_example(loaded, prompt: P.Prompt, answer: str) -> AnalysisExample:
    """One forward pass over prompt + answer, capturing q at the question-and-answer rows
    ("the question and output part") and K, V everywhere."""
    tok = P.tokenize_prompt(prompt, loaded.tokenizer)
    ans_ids = loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tok.input_ids + ans_ids], device=loaded.device)
    q_sel = slice(tok.question_start, ids.shape[1])
    with torch.inference_mode(), capture(loaded.model, positions=q_sel, keep=("q", "k", "v")) as cap:
        loaded.model(input_ids=ids, logits_to_keep=1)
    bos = 0 if ids[0, 0].item() == getattr(loaded.tokenizer, "bos_token_id", None) else None
    return AnalysisExample(cap, ids, tok.context, tok.question_start, bos)


def head_scores(loaded, qaset: QASet, items: list[tuple[int, int]], answers_none: dict[int, list[str]],
                utility: UtilityConfig) -> HeadScores:
    """Retrieval and utility scores from the analysis ``items``; ``answers_none``: the
    unmasked answers of the kept questions at each position. Each example is prepared for
    Eq. 4 as it is captured and its capture dropped (long examples fit in memory)."""
    kept = qaset.audit.kept
    prepared, retrieval = [], []
    place = ExamplePlacer(loaded.model, qaset.audit.tokens_max + qaset.cfg.max_new_tokens)  # GPU, then CPU
    for pos, i in tqdm(items, desc="capture q, K, V"):
        ex = capture_example(loaded, qaset.prompts[pos][i], answers_none[pos][kept.index(i)])
        retrieval.append(retrieval_scores(ex.capture, None, ex.context, bos_index=ex.bos_index))
        prepared.append(place(prepare(dict(ex.capture), utility)))
    u = utility_scores(prepared, utility, device=loaded.device)
    return HeadScores(average_scores(retrieval), u.u, u.converged, u.error, len(items))
