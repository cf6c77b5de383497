"""Accuracy on multi-document QA, as Liu et al. (2024) score it (§5.1, App. C).

The paper: "Metric as in Liu et al.: best_subspan_em". Liu et al.'s
``src/lost_in_the_middle/metrics.py`` normalises with the SQuAD script (lowercase, drop
punctuation, drop the articles a/an/the, collapse whitespace) and counts a prediction as
correct if any normalised gold answer is a substring of the normalised prediction. Their
``scripts/evaluate_qa_responses.py`` first keeps the response up to its first newline
(``model_answer.split("\n")[0].strip()``): "since otherwise models could hack the metric
by simply copying the input context". ``best_subspan_em`` does both;
``first_line_only=False`` gives their bare metric.
"""

from __future__ import annotations

import string
from typing import Iterable, Sequence

import regex  # Liu et al. use `regex`, not `re` (a transformers dependency)

__all__ = ["normalize_answer", "first_line", "best_subspan_em", "accuracy"]

_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower, remove punctuation, remove articles, fix whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    s = regex.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def first_line(prediction: str) -> str:
    """The response as Liu et al. score it: ``model_answer.split("\\n")[0].strip()``
    (split before stripping: an answer that starts with a newline is empty)."""
    return prediction.split("\n")[0].strip()


def best_subspan_em(prediction: str, answers: Iterable[str], first_line_only: bool = True) -> float:
    """1.0 if any normalised gold answer is a substring of the normalised prediction."""
    pred = normalize_answer(first_line(prediction) if first_line_only else prediction)
    for gold in answers:
        if normalize_answer(gold).lower() in pred.lower():
            return 1.0
    return 0.0


def accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Mean best_subspan_em in percent (the paper's tables are in %)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answer lists")
    if not predictions:
        raise ValueError("accuracy of no predictions is undefined")
    return 100.0 * sum(best_subspan_em(p, a) for p, a in zip(predictions, answers)) / len(predictions)
