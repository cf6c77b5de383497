"""best_subspan_em as Liu et al. score it (metrics.py + evaluate_qa_responses.py)."""

import pytest
from hypothesis import given, settings, strategies as st

from ropedim.metrics import accuracy, best_subspan_em, first_line, normalize_answer


@pytest.mark.parametrize("raw, norm", [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("an apple a day", "apple day"),
    ("Anthem of the Seas", "anthem of seas"),  # articles only as whole words
    ('"beloved"', "beloved"),
    ("U.S.A.", "usa"),
    ("Wilhelm Conrad Röntgen", "wilhelm conrad röntgen"),
    ("7.6%", "76"),
    ("  tabs\tand\nnewlines  ", "tabs and newlines"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize("prediction, answers, score", [
    ("Paris is the capital of France.", ["paris"], 1.0),
    ("The first prize went to Wilhelm Conrad Röntgen in 1901.", ["Wilhelm Conrad Röntgen"], 1.0),
    ("Röntgen", ["Wilhelm Conrad Röntgen"], 0.0),  # the gold must be inside the prediction
    ("It means beloved.", ['"beloved"', "beloved"], 1.0),
    ("Lyon", ["Paris", "Lyon"], 1.0),  # any of the answers
    ("Marseille", ["Paris", "Lyon"], 0.0),
    ("the U.S.", ["US"], 1.0),
    ("Lyon\nParis", ["Paris"], 0.0),  # only the first line counts
    ("\n  Paris\nLyon", ["Paris"], 0.0),  # split before stripping, as Liu et al.: the first line is empty
    ("  Paris  \nLyon", ["Paris"], 1.0),
    ("", ["Paris"], 0.0),
    ("anything at all", ["the"], 1.0),  # an answer that normalises to "" matches (as theirs)
])
def test_best_subspan_em(prediction, answers, score):
    assert best_subspan_em(prediction, answers) == score


def test_first_line_only_off_is_their_bare_metric():
    assert best_subspan_em("Lyon\nParis", ["Paris"], first_line_only=False) == 1.0
    assert first_line("  \n Paris \n Lyon") == ""  # model_answer.split("\n")[0].strip()
    assert first_line(" Paris \n Lyon") == "Paris"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=40), st.text(min_size=1, max_size=10))
def test_prediction_containing_the_answer_is_correct(pre, ans):
    ans = ans.replace("\n", " ")
    pred = (pre.replace("\n", " ") + " " + ans + " tail").strip()
    assert best_subspan_em(pred, [ans]) == 1.0
    assert normalize_answer(normalize_answer(pred)) == normalize_answer(pred)  # idempotent


def test_accuracy_in_percent():
    assert accuracy(["Paris", "no idea", "lyon!"], [["paris"], ["Rome"], ["Lyon"]]) == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        accuracy(["a"], [])
