"""The gold answer's teacher-forced log-probability (ropedim.logprob): equal to a
token-by-token reference, independent of batching and padding, moved by interventions,
restored after them."""

import numpy as np
import pytest
import torch

from ropedim.hooks import BeforeRoPE
from ropedim.logprob import NONE, Intervention, answer_ids, gold_logprob
from ropedim.models import load_cached
from ropedim.prompts import build_prompts, encode



@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gemma3"])
def tiny(request):
    return load_cached(request.param)


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(loaded, prompt, answer) -> float:
    """Token by token, no batch: Σ log p(a_t | prompt, a_<t)."""
    ids, _ = encode(prompt, loaded.tokenizer)
    total = 0.0
    for a in answer_ids(prompt, answer, loaded.tokenizer):
        with torch.no_grad():
            logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        total += float(logits.log_softmax(-1)[a])
        ids = ids + [a]
    return total


def test_equals_the_token_by_token_reference_whatever_the_batch(tiny, qa_examples):
    exs = qa_examples()
    ps, golds = build_prompts(exs, "plain"), [e.answers[0] for e in exs]
    ref = np.array([_reference(tiny, p, g) for p, g in zip(ps, golds)])
    for bs in (1, 3, 8):  # batches of unequal lengths: right padding must not matter
        got = gold_logprob(tiny, ps, golds, [NONE], batch_size=bs)["none"]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert (ref < 0).all()


def test_interventions_move_it_and_the_model_is_restored(tiny, qa_examples):
    exs = qa_examples()
    ps, golds = build_prompts(exs, "plain"), [e.answers[0] for e in exs]
    a = tiny.anatomy
    zero = torch.zeros(a.n_layers, a.n_heads, a.head_dim)
    split = (torch.rand(zero.shape, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    ivs = [NONE, Intervention.query_mask("zero", zero), Intervention.query_mask("split", BeforeRoPE(split))]
    got = gold_logprob(tiny, ps, golds, ivs, batch_size=4)
    assert not np.allclose(got["zero"], got["none"]) and not np.allclose(got["split"], got["none"])
    again = gold_logprob(tiny, ps, golds, [NONE], batch_size=4)["none"]
    np.testing.assert_array_equal(again, got["none"])  # hooks removed on exit


def test_bad_input_says_what_is_wrong(tiny, qa_examples):
    ps = build_prompts(qa_examples(2), "plain")
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        gold_logprob(tiny, ps, ["x"], [NONE])
    with pytest.raises(ValueError, match="repeat"):
        gold_logprob(tiny, ps, ["x", "y"], [NONE, NONE])


def test_a_study_gives_it_per_position_and_question_cached(tmp_path, monkeypatch):
    from ropedim.qa.config import QAConfig
    from ropedim.qa.study import Study
    monkeypatch.setenv("ROPEDIM_CACHE", str(tmp_path / "cache"))
    loaded = load_cached("tiny-llama")
    study = Study(loaded, QAConfig(task="synthetic", n=4, k=2, n_analysis=1, batch_size=4, max_new_tokens=4), {})
    a = loaded.anatomy
    zero = Intervention.query_mask("zero", torch.zeros(a.n_layers, a.n_heads, a.head_dim))
    got = study.gold_logprob([zero])
    n = len(study.qaset.audit.kept)
    assert n >= 2, study.qaset.audit
    assert set(got) == {"none", "zero"} and got["none"].shape == (len(study.qaset.positions), n)
    assert len(list((tmp_path / "cache" / "logprob").glob("*"))) >= 2  # one entry per intervention
    np.testing.assert_array_equal(study.gold_logprob([zero], questions=2)["zero"], got["zero"][:, :2])


def test_a_study_answers_under_the_same_interventions_cached(tmp_path, monkeypatch):
    """``Study.correctness_under``: 0/1 per position and question under each intervention
    (at every position), the unmasked run included; equal to the faithful sweep's answers
    for a query mask, and answered once (per prompt cache) however often it is asked."""
    from ropedim.qa.answers import answer, correctness
    from ropedim.qa.config import QAConfig
    from ropedim.qa.study import Study
    monkeypatch.setenv("ROPEDIM_CACHE", str(tmp_path / "cache"))
    loaded = load_cached("tiny-llama")
    study = Study(loaded, QAConfig(task="synthetic", n=4, k=2, n_analysis=1, batch_size=4, max_new_tokens=4), {})
    a = loaded.anatomy
    half = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    half[..., : a.head_dim // 2] = 0
    got = study.correctness_under([Intervention.query_mask("half", half)], questions=3)
    n = min(3, len(study.qaset.audit.kept))
    assert set(got) == {"none", "half"} and got["half"].shape == (len(study.qaset.positions), n)
    assert set(np.unique(got["half"])) <= {0.0, 1.0}
    ref = correctness(answer(loaded, study.qaset, {"none": None, "half": half}, "faithful", n), study.qaset)
    for name in got:
        np.testing.assert_array_equal(got[name], ref[name])
    calls = []
    real_forward = loaded.model.forward
    monkeypatch.setattr(loaded.model, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    again = study.correctness_under([Intervention.query_mask("half", half)], questions=3)
    assert not calls and all(np.array_equal(again[k], got[k]) for k in got)
