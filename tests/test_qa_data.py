"""Lost-in-the-middle data: reading, k-document examples with the gold moved, synthetic task."""

import gzip
import json
import re

import pytest

from ropedim import qa_data
from ropedim.metrics import normalize_answer
from ropedim.qa_data import (DataError, Doc, Example, build_k_doc, load_oracle, place_gold,
                             read_litm, synthetic_task)


def _rec(i, n_docs=1, gold_at=0):
    ctxs = [{"title": f"T{i}-{j}", "text": f"distractor {j} about topic {i}", "hasanswer": False,
             "isgold": False} for j in range(n_docs - 1)]
    ctxs.insert(gold_at, {"title": f"Gold {i}", "text": f"the answer to q{i} is ans{i}x",
                          "hasanswer": True, "isgold": True})
    return {"question": f"what is q{i} topic{i}", "answers": [f"ans{i}x"], "ctxs": ctxs}


def _write(path, recs):
    lines = "".join(json.dumps(r) + "\n" for r in recs)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(lines)
    else:
        path.write_text(lines)
    return path


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz"])
def test_read_litm(tmp_path, name):
    exs = read_litm(_write(tmp_path / name, [_rec(0), _rec(1, n_docs=3, gold_at=2)]))
    assert [e.qid for e in exs] == ["0", "1"]
    assert exs[1].gold_index == 2 and exs[1].gold == Doc("Gold 1", "the answer to q1 is ans1x", True)
    assert exs[0].answers == ("ans0x",) and len(exs[1].docs) == 3


@pytest.mark.parametrize("bad, what", [
    ("{not json", "not valid JSON"),
    (json.dumps({"answers": ["a"], "ctxs": [{"title": "t", "text": "x", "isgold": True}]}), "'question'"),
    (json.dumps({"question": "q", "answers": ["a"], "ctxs": [{"text": "x", "isgold": True}]}), "ctxs[0]"),
    (json.dumps({"question": "q", "answers": ["a"], "ctxs": [{"title": "t", "text": "x", "isgold": False}]}),
     "0 gold"),
], ids=["json", "question", "title", "no-gold"])
def test_malformed_line_names_file_and_line(tmp_path, bad, what):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(_rec(0)) + "\n" + bad + "\n")
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: .*{re.escape(what)}") as e:
        read_litm(p)
    assert "expected lost-in-the-middle fields" in str(e.value)


def test_missing_oracle_tells_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(qa_data.ORACLE_ENV, str(tmp_path / "nowhere.jsonl.gz"))
    with pytest.raises(FileNotFoundError, match="--qa-data.*ROPEDIM_NQ_ORACLE"):
        load_oracle()


def test_default_path_is_outside_the_repo(monkeypatch):
    monkeypatch.delenv(qa_data.ORACLE_ENV, raising=False)
    p = qa_data.default_oracle_path()
    assert p == qa_data.REPO_ROOT.parent / "shared/data/lost-in-the-middle/nq-open-oracle.jsonl.gz"


def _pool(n=40):
    return [Example(str(i), f"what is q{i} topic{i}", (f"ans{i}x",),
                    (Doc(f"Gold {i}", f"the answer to q{i} is ans{i}x topic{i}", True),), 0)
            for i in range(n)]


@pytest.mark.parametrize("kind", ["bm25", "random"])
def test_build_k_doc_pairs_positions(kind):
    pool = _pool()
    by_pos = {p: build_k_doc(pool, 5, p, kind, seed=3, n=10) for p in (0, 2, 4)}
    for p, exs in by_pos.items():
        assert len(exs) == 10
        for e in exs:
            assert len(e.docs) == 5 and e.gold_index == p and e.docs[p].is_gold
            assert sum(d.is_gold for d in e.docs) == 1
            assert e.gold == pool[int(e.qid)].gold
            others = [d for d in e.docs if not d.is_gold]
            assert len({d.text for d in others}) == 4
            assert not any(normalize_answer(a) in normalize_answer(d.title + " " + d.text)
                           for d in others for a in e.answers)
    # the same questions, the same distractors in the same order: only the gold moves
    strip = lambda e: (e.qid, [d for d in e.docs if not d.is_gold])  # noqa: E731
    assert [strip(e) for e in by_pos[0]] == [strip(e) for e in by_pos[4]]
    assert build_k_doc(pool, 5, 0, kind, seed=3, n=10) == by_pos[0]  # deterministic
    assert build_k_doc(pool, 5, 0, kind, seed=4, n=10) != by_pos[0]


def test_bm25_prefers_lexical_overlap():
    pool = _pool(30) + [Example("x", "who built the zanzibar lighthouse", ("Mr Q",),
                                (Doc("Zanzibar", "a lighthouse on zanzibar built by Mr Q", True),), 0),
                        Example("y", "unrelated", ("zz",),
                                (Doc("Zanzibar lighthouse", "the zanzibar lighthouse is tall", True),), 0)]
    ex = build_k_doc(pool, 3, 1, "bm25", seed=0)[30]
    assert ex.docs[0].title == "Zanzibar lighthouse"  # most similar first, gold at index 1
    assert qa_data.bm25_scores(pool, "zanzibar lighthouse").argmax() == 31


def test_short_answers_use_whole_words():
    pool = _pool(10)
    pool[0] = Example("0", "which letter", ("S",), (Doc("Letters", "the letter S is nice", True),), 0)
    ex = build_k_doc(pool, 5, 0, "bm25")[0]  # "s" is inside every passage as a substring
    assert len(ex.docs) == 5


def test_not_enough_distractors():
    with pytest.raises(DataError, match="need 9"):
        build_k_doc(_pool(5), 10, 0, "random")


def test_place_gold_like_liu_et_al(tmp_path):
    """Liu et al. insert the gold into the top k-1 distractors: gold_at_i files are reorderings."""
    ex = read_litm(_write(tmp_path / "20.jsonl", [_rec(0, n_docs=20, gold_at=0)]))[0]
    at9 = place_gold(ex, 9)
    assert at9.gold_index == 9 and len(at9.docs) == 20
    assert [d.title for d in at9.docs if not d.is_gold] == [f"T0-{j}" for j in range(19)]
    assert place_gold(at9, 0) == ex
    assert build_k_doc([ex], 10, 4, "file")[0] == place_gold(ex, 4, k=10)
    assert [d.title for d in place_gold(ex, 4, k=10).docs][:5] == ["T0-0", "T0-1", "T0-2", "T0-3", "Gold 0"]


def test_synthetic_task():
    a, b = synthetic_task(6, 10, 0, seed=1), synthetic_task(6, 10, 7, seed=1)
    assert a == synthetic_task(6, 10, 0, seed=1) and a != synthetic_task(6, 10, 0, seed=2)
    for x, y in zip(a, b):
        assert y.gold_index == 7 and y.docs[7].is_gold and x.docs[0].is_gold
        assert [d for d in x.docs if not d.is_gold] == [d for d in y.docs if not d.is_gold]
        assert x.gold.title in x.question
        (ans,) = x.answers
        assert [ans in d.text for d in x.docs] == [d.is_gold for d in x.docs]
        assert len({d.title.split()[0] for d in x.docs}) == 10


@pytest.fixture(scope="module")
def oracle():
    try:
        return load_oracle()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_oracle_file(oracle):
    assert len(oracle) == 2655  # App. C: "There are 2655 examples in the test set."
    assert all(len(e.docs) == 1 and e.gold_index == 0 for e in oracle)


@pytest.mark.parametrize("kind", ["bm25", "random"])
def test_oracle_20_docs(oracle, kind):
    exs = build_k_doc(oracle, 20, 19, kind, seed=0, n=40)
    assert len(exs) == 40 and all(len(e.docs) == 20 and e.gold_index == 19 for e in exs)
