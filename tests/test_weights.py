"""Claim C5a inputs (ropedim.weights): W_q row L1 norms by θ rank, and the GGUF layout."""

from __future__ import annotations

import pytest
import torch

from ropedim.anatomy import attention_modules
from ropedim.models import TINY_MODELS, load, load_cached
from ropedim.weights import spearman_with_rank, to_paper_order, wq_norms, wq_row_l1


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smollm2():
    return load_cached("smollm2")


def test_row_l1_matches_manual():
    m = load_cached("tiny-qwen2").model
    rows = wq_row_l1(m)
    w = m.model.layers[1].self_attn.q_proj.weight  # [H*Dh, d]
    assert rows.shape == (2, 4, 32)
    torch.testing.assert_close(rows[1, 2, 5], w[2 * 32 + 5].abs().sum())


def test_paper_order_and_spearman_on_synthetic_values():
    a = load_cached("tiny-phi").anatomy  # partial rotary: a non-trivial storage order
    vals = a.rank[:, None, :].float().expand(a.n_layers, a.n_heads, a.head_dim).clone()
    paper = to_paper_order(vals, a.rank)
    assert (paper[..., 1:] >= paper[..., :-1]).all()  # θ rank ascending in paper order
    torch.testing.assert_close(spearman_with_rank(vals, a.rank), torch.ones(2, 4))
    torch.testing.assert_close(spearman_with_rank(-vals, a.rank), -torch.ones(2, 4))


def test_random_init_models_show_no_trend():
    """Negative control: untrained weights have no θ-rank structure (mean ρ near 0)."""
    rhos = torch.cat([wq_norms(load(n, seed=s).model).spearman.flatten()
                      for n in TINY_MODELS for s in (0, 1)])
    assert rhos.numel() >= 100
    assert abs(rhos.mean().item()) < 0.1, rhos.mean()


def test_scaled_variant_only_for_qk_norm_models():
    for name in TINY_MODELS:
        lo = load_cached(name)
        w = wq_norms(lo.model, lo.anatomy)
        assert (w.scaled_storage is not None) == lo.anatomy.qk_norm
        if w.scaled_storage is not None:
            torch.testing.assert_close(w.scaled_storage, w.storage * lo.anatomy.q_norm_scale.abs())


def _answer_nll(lo, model, question, answer):
    tok = lo.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": question}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)["input_ids"]
    ans = tok(answer, return_tensors="pt", add_special_tokens=False).input_ids
    ids = torch.cat([prompt, ans], 1)
    with torch.no_grad():
        logp = model(ids).logits[0, prompt.shape[1] - 1:-1].log_softmax(-1)
    return -logp.gather(-1, ans[0, :, None]).mean().item()


def test_smollm2_gguf_q_proj_is_half_split(smollm2, record_property):
    """transformers un-permutes llama.cpp's q/k rows; with HF's rotate_half pairing the model
    answers correctly, and re-permuting the rows to llama.cpp's layout breaks it."""
    tok, model = smollm2.tokenizer, smollm2.model
    q = "What is the capital of France?"
    ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=10, do_sample=False)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    record_property("smollm2_answer", text)
    assert "Paris" in text

    good = _answer_nll(smollm2, model, q, "The capital of France is Paris.")
    saved = []  # llama.cpp's row order: (j, j + D) -> (2j, 2j + 1); restored below
    try:
        for attn in attention_modules(model):
            for lin in (attn.q_proj, attn.k_proj):
                w = lin.weight.data
                saved.append((lin, w))
                n = w.shape[0] // attn.head_dim
                lin.weight.data = w.view(n, 2, attn.head_dim // 2, -1).transpose(1, 2).reshape(w.shape)
        bad = _answer_nll(smollm2, model, q, "The capital of France is Paris.")
    finally:
        for lin, w in saved:
            lin.weight.data = w
    record_property("nll_half_split_vs_permuted", (good, bad))
    assert good < bad


def test_smollm2_row_norms_rise_with_theta_rank(smollm2, record_property):
    """C5a on SmolLM2-135M: per-head Spearman(θ rank, W_q row L1) is positive on average.
    (Seen: mean ρ ≈ 0.34 over 270 heads; the mean curve rises from ≈64 to ≈97.)"""
    w = wq_norms(smollm2.model, smollm2.anatomy)
    assert w.spearman.shape == (30, 9) and w.scaled_storage is None
    curve = w.mean_by_dim()
    record_property("smollm2_mean_spearman", w.spearman.mean().item())
    record_property("smollm2_frac_heads_positive", (w.spearman > 0).float().mean().item())
    print(f"smollm2: mean ρ {w.spearman.mean():.3f}, first 8 dims {curve[:8].mean():.1f}, "
          f"last 8 dims {curve[-8:].mean():.1f}")
    assert w.spearman.mean() > 0


@pytest.mark.slow  # first run dequantises the Gemma 3 GGUF (~100 s)
def test_gemma3_row_norms_recorded(record_property):
    lo = load_cached("gemma3")
    w = wq_norms(lo.model, lo.anatomy)
    assert w.spearman.shape == (18, 4) and w.scaled_spearman is not None
    record_property("gemma3_mean_spearman", w.spearman.mean().item())
    record_property("gemma3_mean_scaled_spearman", w.scaled_spearman.mean().item())
    print(f"gemma3: mean ρ {w.spearman.mean():.3f}, scaled by |1 + q_norm| "
          f"{w.scaled_spearman.mean():.3f}")
    assert torch.isfinite(w.spearman).all()
