"""Greedy generation, the masked sweep (faithful / fast) and its disk cache, on tiny models."""

import pytest
import torch

from ropedim import generation
from ropedim.decode import greedy
from ropedim.generation import generate, mask_digest, sweep
from ropedim.hooks import BeforeRoPE
from ropedim.models import load_cached, tiny_tokenizer
from ropedim.prompts import build_prompts, tokenize_prompt
from ropedim.qa_data import Doc, Example

N_NEW = 10


def _examples(n=5):
    out = []
    for i in range(n):
        docs = tuple(Doc(f"t{j}", "word " * (j + i % 3) + f"fact {j}", j == i % 3) for j in range(3))
        out.append(Example(str(i), "which fact" + "?" * i, ("fact",), docs, i % 3))
    return out


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gemma3"])
def tiny(request):
    return load_cached(request.param)


@pytest.fixture(scope="module")
def llama():
    return load_cached("tiny-llama")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPEDIM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # tiny matmuls: thread hand-offs cost more than they save, worse on a busy CPU
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_greedy_is_hf_greedy(tiny):
    ps = build_prompts(_examples(), "plain")
    ours = generate(tiny, None, ps, N_NEW, batch_size=4, cache=False)
    tok = tiny.tokenizer
    for p, mine in zip(ps, ours):
        ids = torch.tensor([tokenize_prompt(p, tok).input_ids])
        ref = tiny.model.generate(ids, max_new_tokens=N_NEW, do_sample=False)[0, ids.shape[1]:].tolist()
        n = next(n for n in range(len(ref) + 1) if tok.decode(ref[:n], skip_special_tokens=True) == mine)
        assert n == len(ref) or "\n" in mine  # stopped early only at a newline


def test_batched_equals_single(llama):
    ps = [p.text for p in build_prompts(_examples(), "plain")]
    assert generate(llama, None, ps, N_NEW, batch_size=5, cache=False) == \
        generate(llama, None, ps, N_NEW, batch_size=1, cache=False)


@pytest.mark.parametrize("lo", [19, 51])
def test_rows_stopping_early_leave_the_batch(llama, monkeypatch, lo):
    monkeypatch.setattr(generation, "eos_ids", lambda m, t: set(range(lo, lo + 16)))
    ps = build_prompts(_examples(), "plain")
    single = generate(llama, None, ps, N_NEW, batch_size=1, cache=False)
    assert len({len(x) for x in single}) >= 3  # rows stop at different steps
    assert generate(llama, None, ps, N_NEW, batch_size=5, cache=False) == single
    assert sweep(llama, None, ps, {"none": None}, "fast", N_NEW, batch_size=5, cache=False)["none"] == single


def _masks(loaded):
    a = loaded.anatomy
    first = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    first[:, :, : a.head_dim // 2] = 0
    split = (torch.rand(first.shape, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    return {"none": None, "first-half": first, "zero": torch.zeros_like(first),
            "before-rope": BeforeRoPE(split)}  # splits rotary pairs: differs from masking after RoPE


def test_fast_and_faithful_sweeps_are_masking_from_the_question_and_everywhere(tiny):
    """The shared-context sweeps equal plain generation with the HF cache: fast mode masks
    from the question on, faithful mode at every position."""
    ps = build_prompts(_examples(), "plain")
    variants = _masks(tiny)
    fast = sweep(tiny, None, ps, variants, mode="fast", max_new_tokens=N_NEW, batch_size=4, cache=False)
    faithful = sweep(tiny, None, ps, variants, mode="faithful", max_new_tokens=N_NEW, batch_size=4,
                     cache=False)
    assert fast["none"] == faithful["none"]
    for name, m in variants.items():  # reference: the whole prompt, mask from the question on / everywhere
        q = [tokenize_prompt(p, tiny.tokenizer).question_start for p in ps]
        assert fast[name] == [generate(tiny, None, [p], N_NEW, 1, m, qs, cache=False)[0] for p, qs in zip(ps, q)], name
        assert faithful[name] == generate(tiny, None, ps, N_NEW, 1, m, cache=False), name
    assert fast["zero"] != fast["none"] and faithful["zero"] != faithful["none"]  # masks act
    assert faithful["first-half"] != fast["first-half"]  # the modes differ


def test_answers_do_not_depend_on_what_is_cached(llama):
    """Batches are fixed over all prompts and cached answers are kept: a sweep after a
    partial one (the pipeline answers the analysis questions first) equals a cold sweep."""
    ps = build_prompts(_examples(6), "plain")
    variants = _masks(llama)
    cold = sweep(llama, None, ps, variants, "fast", N_NEW, batch_size=4, cache=False)
    part = sweep(llama, None, ps[1:3], {"none": None}, "fast", N_NEW, batch_size=4)
    assert part["none"] == cold["none"][1:3]
    assert sweep(llama, None, ps, variants, "fast", N_NEW, batch_size=4) == cold
    assert generate(llama, None, ps[:5], N_NEW, batch_size=2, mask=variants["zero"]) == \
        generate(llama, None, ps[:5], N_NEW, batch_size=2, mask=variants["zero"], cache=False)


def test_disk_cache(llama, monkeypatch):
    ps = build_prompts(_examples(3), "plain")
    m = _masks(llama)["first-half"]
    first = sweep(llama, None, ps, {"a": m}, mode="fast", max_new_tokens=N_NEW)
    plain = generate(llama, None, ps, N_NEW, mask=m)
    calls = []
    real_forward = llama.model.forward
    monkeypatch.setattr(llama.model, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    assert sweep(llama, None, ps, {"b": m}, mode="fast", max_new_tokens=N_NEW) == {"b": first["a"]}
    assert generate(llama, None, ps, N_NEW, mask=m) == plain and not calls
    generate(llama, None, ps, N_NEW - 1, mask=m)  # another max_new_tokens: a new key
    assert calls
    calls.clear()
    generate(llama, None, ps, N_NEW, mask=m * 1.0)  # an equal mask: the same key
    assert not calls


def test_mask_digest():
    m = torch.ones(2, 3, 4)
    assert mask_digest(None) is None and mask_digest(m) == mask_digest(m.numpy())
    assert mask_digest(BeforeRoPE(m)) != mask_digest(m)  # the site is part of the key
    m2 = m.clone()
    m2[0, 0, 0] = 0
    assert mask_digest(m2) != mask_digest(m) != mask_digest(m.reshape(6, 4))


class _Scripted:
    """A decoder emitting a fixed token sequence, whatever the input."""

    def __init__(self, script):
        self.script = iter(script + script[-1:] * N_NEW)

    def first(self):
        return torch.tensor([next(self.script)])

    def next(self, tokens):
        return self.first()

    def keep(self, idx):
        pass


@pytest.mark.parametrize("text, out", [
    (" \nParis\nLyon", " \n"),  # a newline stops, also before any text (Liu et al.'s first line is then empty)
    ("Paris\nLyon", "Paris\n"),
    ("Paris</s>Lyon", "Paris"),  # EOS stops and is dropped
    ("abcdefghijklmnop", "abcdefghij"),  # max_new_tokens
])
def test_stopping(text, out):
    tok = tiny_tokenizer()
    script = tok(text, add_special_tokens=False)["input_ids"]
    got = greedy(_Scripted(script), tok, {tok.eos_token_id}, 1, N_NEW)
    assert got == [out]


@pytest.mark.slow  # SmolLM2-135M-Instruct: ~30 s once its dequantised copy is cached
def test_smollm2_answers_and_fast_mode():
    from ropedim.models import ModelUnavailable
    from ropedim.metrics import best_subspan_em
    from ropedim.qa_data import synthetic_task
    try:
        lm = load_cached("smollm2")
    except ModelUnavailable as e:
        pytest.skip(str(e))
    ex = synthetic_task(4, 5, 0, seed=0)
    ps = build_prompts(ex, lm.prompt_style, lm.tokenizer)
    a = lm.anatomy
    last = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    last[:, :, a.head_dim // 2 - 4: a.head_dim // 2] = last[:, :, -4:] = 0
    fast = sweep(lm, None, ps, {"none": None, "last": last}, "fast", 24, batch_size=4, cache=False)
    assert sum(best_subspan_em(x, e.answers) for x, e in zip(fast["none"], ex)) >= 3
    for p, got in zip(ps[:2], fast["last"]):
        q = tokenize_prompt(p, lm.tokenizer).question_start
        assert generate(lm, None, [p], 24, batch_size=1, mask=last, from_position=q, cache=False) == [got]


def test_generation_under_an_intervention_is_that_hook_and_keyed_by_it(llama, monkeypatch):
    """``generate(intervention=...)``: the answers of the hooked model (a query mask as an
    Intervention equals the same mask passed as ``mask``), cached under the intervention's
    spec (never an unmasked answer's entry), and the model restored after it."""
    from ropedim.logprob import Intervention
    from ropedim.head_ablation import head_intervention
    ps = build_prompts(_examples(4), "plain")
    zero = _masks(llama)["zero"]
    none = generate(llama, None, ps, N_NEW, batch_size=2)
    as_iv = generate(llama, None, ps, N_NEW, batch_size=2, intervention=Intervention.query_mask("zero", zero))
    assert as_iv == generate(llama, None, ps, N_NEW, batch_size=2, mask=zero, cache=False) and as_iv != none
    heads = head_intervention("all", "zero", [(l, h) for l in range(llama.anatomy.n_layers)
                                              for h in range(llama.anatomy.n_heads)])
    cold = generate(llama, None, ps, N_NEW, batch_size=2, intervention=heads, cache=False)
    assert cold != none  # a hook other than a query mask acts
    assert generate(llama, None, ps, N_NEW, batch_size=2) == none  # restored, and its own cache entries
    assert generate(llama, None, ps, N_NEW, batch_size=2, intervention=heads) == cold
    calls = []
    real_forward = llama.model.forward
    monkeypatch.setattr(llama.model, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    assert generate(llama, None, ps, N_NEW, batch_size=2, intervention=heads) == cold and not calls
