"""Multi-document QA data (§5.1, App. C): lost-in-the-middle NQ-open, and a synthetic task.

The paper: "We use the processed dataset from Liu et al. (2024) ... derived from
NaturalQuestions-Open ... 2655 examples in the test set", 20 documents per question, one
of which holds the answer, at the 1st, 10th or 20th position.

Liu et al. build each k-document example by taking the top k-1 retrieved passages that
do not contain the answer, in retrieval order, and inserting the gold passage at the
requested index (``make_qa_data_from_retrieval_results.py``). Their per-position files
thus hold the same distractors in the same order. We read ONE file and move the gold
(``place_gold``); a per-position file read with ``read_litm`` can also be used as it is.

The 20-document files are not shipped here, only ``nq-open-oracle.jsonl.gz`` (the gold
passage alone). ``build_k_doc`` then draws the k-1 distractors from the other questions'
gold passages: lexically closest to the question (BM25, like a retriever would) or at
random. Questions and distractors depend on the seed only, never on the gold position,
so accuracies at different positions are paired.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import regex
from scipy import sparse

from ropedim.metrics import normalize_answer

__all__ = ["DataError", "Doc", "Example", "read_litm", "default_oracle_path", "load_oracle",
           "place_gold", "build_k_doc", "bm25_scores", "synthetic_task"]

REPO_ROOT = Path(__file__).resolve().parents[1]
ORACLE_ENV = "ROPEDIM_NQ_ORACLE"
ORACLE_DEFAULT = REPO_ROOT.parent / "shared/data/lost-in-the-middle/nq-open-oracle.jsonl.gz"


class DataError(ValueError):
    """A QA data file that cannot be used as it is."""


@dataclass(frozen=True)
class Doc:
    title: str
    text: str
    is_gold: bool = False


@dataclass(frozen=True)
class Example:
    qid: str
    question: str
    answers: tuple[str, ...]
    docs: tuple[Doc, ...]
    gold_index: int

    @property
    def gold(self) -> Doc:
        return self.docs[self.gold_index]


# ---------------------------------------------------------------- reading
def read_litm(path: str | os.PathLike) -> list[Example]:
    """Read a lost-in-the-middle ``.jsonl`` / ``.jsonl.gz`` file (question, answers, ctxs)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such QA data file")
    opener = gzip.open if path.suffix == ".gz" else open
    out: list[Example] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                out.append(_parse(line, path, lineno, len(out)))
    if not out:
        raise DataError(f"{path}: no examples; expected one JSON object a line")
    return out


def _parse(line: str, path: Path, lineno: int, index: int) -> Example:
    where = f"{path}:{lineno}"
    fix = "expected lost-in-the-middle fields question, answers, ctxs[title, text, isgold]"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg}); {fix}") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: not a JSON object; {fix}")
    for key, typ in (("question", str), ("answers", list), ("ctxs", list)):
        if not isinstance(rec.get(key), typ) or not rec[key]:
            raise DataError(f"{where}: missing or empty field {key!r}; {fix}")
    if not all(isinstance(a, str) for a in rec["answers"]):
        raise DataError(f"{where}: 'answers' must be a list of strings; {fix}")
    docs = []
    for j, c in enumerate(rec["ctxs"]):
        gold = c.get("isgold", c.get("hasanswer")) if isinstance(c, dict) else None
        if gold is None or not isinstance(c.get("title"), str) or not isinstance(c.get("text"), str):
            raise DataError(f"{where}: ctxs[{j}] lacks title, text or isgold; {fix}")
        docs.append(Doc(c["title"], c["text"], bool(gold)))
    golds = [j for j, d in enumerate(docs) if d.is_gold]
    if len(golds) != 1:
        raise DataError(f"{where}: {len(golds)} gold passages (isgold true), need exactly 1; {fix}")
    qid = str(rec.get("qid", rec.get("id", index)))
    return Example(qid, rec["question"], tuple(rec["answers"]), tuple(docs), golds[0])


def default_oracle_path() -> Path:
    """``$ROPEDIM_NQ_ORACLE``, else ``../shared/data/lost-in-the-middle/`` beside the repo."""
    return Path(os.environ.get(ORACLE_ENV, ORACLE_DEFAULT))


def load_oracle(path: str | os.PathLike | None = None) -> list[Example]:
    path = Path(path) if path is not None else default_oracle_path()
    if not path.exists():
        raise FileNotFoundError(
            f"NQ-open oracle file not found at {path}. Pass --qa-data PATH or set "
            f"{ORACLE_ENV} to lost-in-the-middle's qa_data/nq-open-oracle.jsonl.gz.")
    return read_litm(path)


# ---------------------------------------------------------------- k-document examples
def place_gold(ex: Example, gold_position: int, k: int | None = None) -> Example:
    """Keep the first k-1 distractors in file order and insert the gold at ``gold_position``."""
    distractors = [d for d in ex.docs if not d.is_gold]
    k = len(distractors) + 1 if k is None else k
    if len(distractors) < k - 1:
        raise DataError(f"question {ex.qid}: {len(distractors)} distractors, need {k - 1}")
    return _assemble(ex, distractors[: k - 1], gold_position)


def _assemble(ex: Example, distractors: Sequence[Doc], gold_position: int) -> Example:
    k = len(distractors) + 1
    if not 0 <= gold_position < k:
        raise ValueError(f"gold_position {gold_position} outside 0..{k - 1}")
    docs = [Doc(d.title, d.text, False) for d in distractors]
    docs.insert(gold_position, Doc(ex.gold.title, ex.gold.text, True))
    return Example(ex.qid, ex.question, ex.answers, tuple(docs), gold_position)


def build_k_doc(examples: Sequence[Example], k: int, gold_position: int, distractors: str = "bm25",
                seed: int = 0, n: int | None = None) -> list[Example]:
    """k-document examples with the gold passage at ``gold_position`` (0-based).

    distractors: "bm25" (the k-1 passages of the pool most similar to the question, most
    similar first, like Liu et al.'s retrieval order), "random", or "file" (the examples'
    own distractors, e.g. a 20-document file). The pool for "bm25"/"random" is the gold
    passages of all ``examples`` except the question's own; a passage containing any of the
    question's normalised answers (title or text; answers of 1-2 characters as whole words)
    is never a distractor. ``n`` questions are drawn with ``seed`` (all if None) and kept in
    file order; "random" draws each question's distractors from (seed, question index).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    idx = np.arange(len(examples))
    if n is not None and n < len(examples):
        idx = np.sort(np.random.default_rng(seed).choice(len(examples), n, replace=False))
    if distractors == "file":
        return [place_gold(examples[i], gold_position, k) for i in idx]
    if distractors not in ("bm25", "random"):
        raise ValueError(f"distractors must be 'bm25', 'random' or 'file', got {distractors!r}")
    pool = _pool(examples)
    out = []
    for i in idx:
        ex = examples[i]
        if distractors == "bm25":
            order = np.argsort(-pool.scores(ex.question), kind="stable")
        else:
            order = np.random.default_rng([seed, int(i)]).permutation(len(examples))
        out.append(_assemble(ex, pool.pick(i, ex, order, k - 1), gold_position))
    return out


class _Pool:
    """The gold passages of a question set, their normalised text and a BM25 index."""

    def __init__(self, docs: list[Doc], k1: float = 0.9, b: float = 0.4):
        self.docs = docs
        self.norm = [f' {normalize_answer(f"{d.title} {d.text}")} ' for d in docs]
        toks = [_tokens(f"{d.title} {d.text}") for d in docs]
        self.vocab: dict[str, int] = {}
        rows, cols = [], []
        for r, ts in enumerate(toks):
            for t in ts:
                rows.append(r)
                cols.append(self.vocab.setdefault(t, len(self.vocab)))
        tf = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(docs), len(self.vocab)))
        tf.sum_duplicates()
        dl = np.array([len(t) for t in toks], dtype=float)
        df = np.bincount(tf.indices, minlength=len(self.vocab))
        idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))  # Lucene's BM25 idf
        norm = k1 * (1 - b + b * dl / max(dl.mean(), 1e-9))
        tf = tf.tocoo()
        w = idf[tf.col] * tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.w = sparse.csr_matrix((w, (tf.row, tf.col)), shape=tf.shape)

    def scores(self, query: str) -> np.ndarray:
        q = np.zeros(len(self.vocab))
        for t in set(_tokens(query)):
            if t in self.vocab:
                q[self.vocab[t]] = 1.0
        return self.w @ q

    def pick(self, i: int, ex: Example, order: np.ndarray, m: int) -> list[Doc]:
        # SQuAD-normalised substring check; answers of 1-2 characters ("S", "7") as whole
        # words only, else they would rule out nearly every passage
        answers = [a if len(a) > 2 else f" {a} " for a in map(normalize_answer, ex.answers) if a]
        seen = {self.docs[i].text, ex.gold.text}
        out: list[Doc] = []
        for j in order:
            d = self.docs[j]
            if j == i or d.text in seen or any(a in self.norm[j] for a in answers):
                continue
            seen.add(d.text)
            out.append(d)
            if len(out) == m:
                return out
        raise DataError(f"question {ex.qid}: only {len(out)} passages lack its answer, need {m}")


_POOLS: dict[str, _Pool] = {}  # in-process cache: building the index takes ~1 s


def _pool(examples: Sequence[Example]) -> _Pool:
    docs = [ex.gold for ex in examples]
    key = hashlib.sha1("\x00".join(f"{d.title}\x01{d.text}" for d in docs).encode()).hexdigest()
    if key not in _POOLS:
        _POOLS[key] = _Pool(docs)
    return _POOLS[key]


_STOP = frozenset("""a an the of in on at to for from by with and or is are was were be been
    it its this that what which who whom whose when where why how does do did has have had
    as into than then there their they he she his her i you we not no""".split())


def _tokens(s: str) -> list[str]:
    return [t for t in regex.findall(r"\w+", s.lower()) if t not in _STOP]


def bm25_scores(examples: Sequence[Example], query: str) -> np.ndarray:
    """BM25 (k1=0.9, b=0.4, as Pyserini) of ``query`` against the examples' gold passages."""
    return _pool(examples).scores(query)


# ---------------------------------------------------------------- synthetic task
_SYL = ["vel", "mor", "an", "kar", "dro", "sil", "ten", "bra", "quo", "lis", "fen", "gor",
        "ith", "nal", "pex", "rud", "sor", "tam", "ul", "vay", "wen", "zir", "hol", "cas"]
_KINDS = ["Institute", "Society", "Museum", "Academy", "Library", "Foundation", "Observatory",
          "Company", "Orchestra", "Guild"]
_CITIES = ["Lisbon", "Oslo", "Cairo", "Lima", "Dublin", "Vienna", "Madrid", "Seoul", "Nairobi",
           "Boston", "Denver", "Sydney", "Toronto", "Berlin", "Athens", "Prague", "Warsaw",
           "Havana", "Manila", "Jakarta", "Santiago", "Bogota", "Chicago", "Glasgow", "Helsinki",
           "Istanbul", "Kyoto", "Montreal", "Naples", "Geneva", "Houston", "Budapest", "Zurich",
           "Melbourne", "Edinburgh", "Stockholm", "Copenhagen", "Bangkok", "Mumbai", "Tehran"]
_OBJECTS = ["old maps", "glass lenses", "folk songs", "clockwork toys", "river stones",
            "rare seeds", "printed almanacs", "painted tiles", "brass instruments", "woven rugs"]


def synthetic_task(n: int, k: int, gold_position: int, seed: int = 0) -> list[Example]:
    """Made-up facts, one per document: "The Velmoran Institute was founded in the city of
    Oslo in 1874. ..."; the question asks where one entity was founded, the answer is its
    city, which no other of the k documents names. Distractors use the same template about
    other entities, so the model has to find the right document. Entities, cities and the
    order of distractors depend on (seed, question index) only: the gold moves, nothing else.
    Up to 40 documents (one city each).
    """
    if not 1 <= k <= len(_CITIES):
        raise ValueError(f"k must be in 1..{len(_CITIES)}, got {k}")
    out = []
    for q in range(n):
        rng = np.random.default_rng([seed, q, 7])
        names: list[str] = []
        while len(names) < k:
            name = "".join(rng.choice(_SYL, 3)).capitalize()
            if not any(name[:4] == x[:4] for x in names):  # names differ from the start
                names.append(name)
        cities = rng.choice(_CITIES, k, replace=False)
        docs = []
        for name, city in zip(names, cities):
            entity = f"{name} {rng.choice(_KINDS)}"
            text = (f"The {entity} was founded in the city of {city} in {rng.integers(1700, 1990)}. "
                    f"It is known for its collection of {rng.choice(_OBJECTS)}.")
            docs.append(Doc(entity, text))
        gold = Example(f"syn{seed}-{q}", f"In which city was the {docs[0].title} founded?",
                       (str(cities[0]),), (Doc(docs[0].title, docs[0].text, True),), 0)
        out.append(_assemble(gold, docs[1:], gold_position))
    return out
