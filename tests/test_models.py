"""Loader (ropedim.models) and RoPE anatomy (ropedim.anatomy): facts read from the model."""

from __future__ import annotations

import pytest
import torch

from ropedim.anatomy import anatomy_of, rotary_module
from ropedim.models import (ALIASES, PAPER_MODELS, TINY_MODELS, ModelUnavailable, load,
                            load_cached)
from ropedim.rope import first_last_mask, inv_freq


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smollm2():
    return load_cached("smollm2")


@pytest.fixture(scope="module")
def gemma3():
    return load_cached("gemma3")


# ---------------------------------------------------------------- loader

def test_unknown_alias_lists_known_ones():
    with pytest.raises(ValueError) as e:
        load("no-such-model")
    for alias in ALIASES:
        assert alias in str(e.value)


@pytest.mark.parametrize("alias", list(PAPER_MODELS))
def test_absent_paper_model_says_how_to_provide_it(alias):
    from huggingface_hub import try_to_load_from_cache

    hf_id = PAPER_MODELS[alias].hf_id
    if isinstance(try_to_load_from_cache(hf_id, "config.json"), str):
        pytest.skip(f"{hf_id} is in the HF cache here")
    with pytest.raises(ModelUnavailable) as e:
        load(alias)
    assert isinstance(e.value, RuntimeError)
    assert f"download {hf_id}" in str(e.value) and "--model" in str(e.value)


def test_missing_local_dir_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable):
        load(str(tmp_path / "absent"))


def test_local_dir_round_trip(tmp_path):
    tiny = load("tiny-qwen2")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    again = load(str(tmp_path))
    assert again.kind == "real" and again.prompt_style == "qwen"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids).logits, tiny.model(ids).logits)


def test_paper_alias_from_ropedim_models_dir(tmp_path, monkeypatch):
    """$ROPEDIM_MODELS/<repo name> is where an offline copy of a paper model can live."""
    tiny = load_cached("tiny-llama")
    tiny.model.save_pretrained(tmp_path / "Llama-3.1-8B-Instruct")
    tiny.tokenizer.save_pretrained(tmp_path / "Llama-3.1-8B-Instruct")
    monkeypatch.setenv("ROPEDIM_MODELS", str(tmp_path))
    lo = load("llama")
    assert (lo.kind, lo.prompt_style) == ("paper", "llama")
    assert lo.source == str(tmp_path / "Llama-3.1-8B-Instruct")


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_models_load_and_generate(name):
    a, b = load(name), load(name)  # seeded: identical weights
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.kind == "tiny" and a.prompt_style == "plain"
    assert not a.model.training and a.model.config._attn_implementation == "sdpa"
    assert next(a.model.parameters()).dtype == torch.float32
    ids = a.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = a.model.generate(ids, max_new_tokens=4, do_sample=False,
                           pad_token_id=a.tokenizer.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 4)
    assert isinstance(a.tokenizer.decode(out[0]), str)


def test_tiny_models_cover_the_architectures():
    llama, qwen, olmo, gemma, phi = (load_cached(n).model for n in TINY_MODELS)
    assert llama.config.rope_parameters["rope_type"] == "llama3"
    attn = qwen.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None
    assert hasattr(olmo.model.layers[0].self_attn, "q_norm")
    assert gemma.model.layers[0].self_attn.sliding_window == 8
    assert gemma.model.layers[-1].self_attn.sliding_window is None
    assert phi.model.layers[0].self_attn.rotary_ndims == 8
    for m in (llama, qwen, olmo, gemma):
        assert m.config.num_key_value_heads < m.config.num_attention_heads  # GQA


def test_load_cached_loads_once():
    assert load_cached("tiny-llama") is load_cached("tiny-llama")
    assert load_cached("tiny-llama") is not load_cached("tiny-llama", seed=1)


def test_dtype_override():
    assert next(load("tiny-olmo2", dtype="bfloat16").model.parameters()).dtype == torch.bfloat16


def test_smollm2_config_and_cache(smollm2):
    cfg = smollm2.model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim,
            cfg.num_key_value_heads) == (30, 9, 64, 3)
    assert cfg.rope_parameters["rope_theta"] == 1e5
    assert smollm2.kind == "real" and smollm2.prompt_style == "chat_template"
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in smollm2.source  # the saved copy
    assert getattr(cfg, "quantization_config", None) is None
    assert smollm2.tokenizer.chat_template


@pytest.mark.slow  # first run dequantises the GGUF (~100 s); later runs ~7 s
def test_gemma3_config(gemma3):
    cfg = gemma3.model.config
    assert cfg.head_dim == 256 and cfg.sliding_window == 512 and cfg.num_hidden_layers == 18
    assert cfg.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    assert cfg.rope_parameters["full_attention"]["rope_theta"] == 1e6
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == [5, 11, 17]
    assert gemma3.prompt_style == "plain"
    a = gemma3.anatomy
    torch.testing.assert_close(a.theta[0], inv_freq(256, 1e4))
    torch.testing.assert_close(a.theta[5], inv_freq(256, 1e6))
    assert a.sliding_window[:6] == [512] * 5 + [None] and a.qk_norm
    assert a.scaling[0] == pytest.approx(256 ** -0.5)


# ---------------------------------------------------------------- anatomy

def test_llama_head128_first_last_16_storage_indices():
    """CLAIMS.md: in HF's half-split layout of a 128-dim head the first 16 dims (in θ
    order) are storage 0-7 and 64-71, the last 16 are 56-63 and 120-127."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=128)
    a = anatomy_of(LlamaForCausalLM(cfg))
    assert a.head_dim == 128 and a.rotary_dim == 128 and a.layout == "half"
    first = first_last_mask(a.rank[0], "first", 16).nonzero().flatten().tolist()
    last = first_last_mask(a.rank[0], "last", 16).nonzero().flatten().tolist()
    assert first == [*range(0, 8), *range(64, 72)]
    assert last == [*range(56, 64), *range(120, 128)]
    torch.testing.assert_close(a.theta[0], inv_freq(128, 10000.0))


@pytest.mark.parametrize("name", TINY_MODELS)
def test_anatomy_matches_the_models_rotary_output(name):
    """cos/sin produced by transformers' own rotary module == cos/sin(pos·θ) from anatomy."""
    m = load_cached(name).model
    a = load_cached(name).anatomy
    rot = rotary_module(m)
    pos = torch.arange(0, 300, 7)[None]
    x = torch.zeros(1, 1, dtype=torch.float32)
    for layer in range(a.n_layers):
        lt = a.layer_types[layer]
        cos, sin = rot(x, pos, lt) if isinstance(rot.rope_type, dict) else rot(x, pos)
        assert cos.shape[-1] == a.rotary_dim
        ang = pos[0, :, None].float() * a.theta[layer]
        s = a.rope_attention_scaling[layer]
        half = a.rotary_dim // 2
        torch.testing.assert_close(cos[0, :, :half], ang.cos() * s)
        torch.testing.assert_close(cos[0, :, half:], ang.cos() * s)  # half-split pairs j, j+D
        torch.testing.assert_close(sin[0, :, :half], ang.sin() * s)


def test_anatomy_facts_of_tiny_models():
    a = load_cached("tiny-llama").anatomy  # llama3 scaling changes θ: read, not assumed
    base = inv_freq(16, 500000.0)
    assert a.rope_type[0] == "llama3"
    assert a.theta[0, 0] == base[0] and not torch.allclose(a.theta[0], base)
    assert (a.theta[0, 1:] < a.theta[0, :-1]).all()
    assert a.group.tolist() == [0, 0, 1, 1] and not a.qk_norm

    g = load_cached("tiny-gemma3").anatomy  # local/global bases, sliding window
    torch.testing.assert_close(g.theta[0], inv_freq(32, 1e4))
    torch.testing.assert_close(g.theta[3], inv_freq(32, 1e6))
    assert g.sliding_window == [8, 8, 8, None] and g.scaling[0] == pytest.approx(32 ** -0.5)
    gm = load_cached("tiny-gemma3").model
    q_norm = gm.model.layers[1].self_attn.q_norm.weight
    torch.testing.assert_close(g.q_norm_scale[1, 2], 1 + q_norm)  # Gemma RMSNorm: (1 + w)

    o = load_cached("tiny-olmo2")  # q_norm over all heads: weight [H*Dh]
    w = o.model.model.layers[0].self_attn.q_norm.weight
    torch.testing.assert_close(o.anatomy.q_norm_scale[0], w.view(4, 16))

    p = load_cached("tiny-phi").anatomy  # partial rotary: 8 of 16 dims rotate
    assert p.rotary_dim == 8 and p.theta.shape == (2, 4)
    assert p.rank[0, :8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert (p.rank[0, 8:] >= 4).all()
    assert p.group.tolist() == [0, 1, 2, 3]


def test_smollm2_anatomy(smollm2):
    a = smollm2.anatomy
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.rotary_dim) == (30, 9, 3, 64, 64)
    torch.testing.assert_close(a.theta[7], inv_freq(64, 1e5))
    assert a.group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert a.sliding_window == [None] * 30 and not a.qk_norm
    assert first_last_mask(a.rank[0], "first", 8).nonzero().flatten().tolist() == [0, 1, 2, 3, 32, 33, 34, 35]
