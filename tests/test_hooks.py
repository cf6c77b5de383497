"""Instrumentation (ropedim.hooks): capture, recomputed attention and query masking are
checked against the model's own computation on every tiny architecture and SmolLM2."""

from __future__ import annotations

import pytest
import torch

from ropedim.anatomy import attention_modules, rotary_module
from ropedim.attention import attention, attention_weights
from ropedim.hooks import capture, masked
from ropedim.qa.masks import theta_end_mask, utility_mask
from ropedim.models import TINY_MODELS, load_cached
from ropedim.rope import rotate_half

ARCHS = [*TINY_MODELS, "smollm2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=ARCHS)
def loaded(request):
    return load_cached(request.param)


def _ids(loaded, t=24, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, min(250, loaded.model.config.vocab_size), (b, t), generator=g)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def _out_proj(attn):
    return getattr(attn, "o_proj", None) or attn.dense  # Phi calls it dense


def _routed_off(model):
    """No ropedim state left on the model."""
    attns = attention_modules(model)
    return (model.config._attn_implementation == "sdpa"
            and all(not getattr(a, "_ropedim_pre", {}) and not getattr(a, "_ropedim_post", {})
                    for a in attns)
            and getattr(model, "_ropedim_depth", 0) == 0)


def test_capture_equals_manual_recomputation(loaded):
    """q_pre/q/k/v == q_proj/k_proj/v_proj (+ q/k norm) and the model's rotary module."""
    model, a = loaded.model, loaded.anatomy
    ids, layer = _ids(loaded), a.n_layers - 1
    attn = attention_modules(model)[layer]
    seen = {}
    hook = attn.register_forward_pre_hook(
        lambda mod, args, kw: seen.update(h=kw["hidden_states"]), with_kwargs=True)
    sel = torch.tensor([0, 7, 23])
    try:
        with torch.no_grad(), capture(model, layers=[layer], positions=sel) as st:
            model(ids)
    finally:
        hook.remove()
    assert list(st) == [layer]
    h, (b, t) = seen["h"], ids.shape

    def proj(lin, norm, n):
        x = lin(h)
        if norm is not None and norm.weight.numel() == x.shape[-1]:  # OLMo 2: over all heads
            return norm(x).view(b, t, n, a.head_dim).transpose(1, 2)
        x = x.view(b, t, n, a.head_dim).transpose(1, 2)
        return norm(x) if norm is not None else x  # Gemma 3 / Phi: per head

    def norm_of(kind):
        return getattr(attn, f"{kind}_norm", None) or getattr(attn, f"{kind}_layernorm", None)

    with torch.no_grad():
        q, k = proj(attn.q_proj, norm_of("q"), a.n_heads), proj(attn.k_proj, norm_of("k"), a.n_kv_heads)
        v = attn.v_proj(h).view(b, t, a.n_kv_heads, a.head_dim).transpose(1, 2)
        rot = rotary_module(model)
        pos = torch.arange(t)[None]
        lt = a.layer_types[layer]
        cos, sin = rot(h, pos, lt) if isinstance(rot.rope_type, dict) else rot(h, pos)
        cos, sin, r = cos[:, None], sin[:, None], a.rotary_dim

        def rope(x):
            xr = x[..., :r] * cos + rotate_half(x[..., :r]) * sin
            return torch.cat([xr, x[..., r:]], dim=-1)

    e = st[layer]
    torch.testing.assert_close(e.q_pre, q[:, :, sel])
    torch.testing.assert_close(e.q, rope(q)[:, :, sel])
    torch.testing.assert_close(e.k, rope(k))
    torch.testing.assert_close(e.v, v)
    assert e.q_pos.tolist() == [sel.tolist()] * b and e.q_idx.tolist() == sel.tolist()
    assert e.scaling == a.scaling[layer] and e.window == a.sliding_window[layer]
    assert _routed_off(model)


def test_recomputed_attention_equals_model_output(loaded):
    """attention(q, K, V) from captured tensors == the input of o_proj, per head."""
    model, a = loaded.model, loaded.anatomy
    ids = _ids(loaded, t=20)
    layers = sorted({0, a.n_layers - 1} | {i for i, w in enumerate(a.sliding_window) if w})
    o_in = {}
    attns = attention_modules(model)
    hooks = [_out_proj(attns[i]).register_forward_pre_hook(
        lambda mod, args, i=i: o_in.__setitem__(i, args[0])) for i in layers]
    try:
        with torch.no_grad(), capture(model, layers=layers, positions=slice(3, 20)) as st:
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    for i in layers:
        b, t, _ = o_in[i].shape
        ref = o_in[i].view(b, t, a.n_heads, a.head_dim).transpose(1, 2)[:, :, 3:]
        torch.testing.assert_close(st.attention(i), ref, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(st[i].o, ref)
        torch.testing.assert_close(st.attention(i, chunk=1), ref, atol=2e-5, rtol=1e-4)


def test_attention_weights_are_causal_windowed_and_consistent():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 2, 10, 8, generator=g),
               torch.randn(2, 2, 10, 8, generator=g))
    qpos = torch.tensor([0, 2, 4, 6, 8, 9])
    w = attention_weights(q, k, 0.3, qpos, window=4)
    kpos = torch.arange(10)
    allowed = (kpos[None] <= qpos[:, None]) & (kpos[None] > qpos[:, None] - 4)
    assert (w[..., ~allowed] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 6))
    # GQA: query heads 0, 1 read KV head 0; 2, 3 read KV head 1
    kv = torch.stack([v[:, 0], v[:, 0], v[:, 1], v[:, 1]], 1)
    torch.testing.assert_close(attention(q, k, v, 0.3, qpos, 4), w @ kv)
    # a manual softmax for one head and one query
    s = (q[1, 3, 4] @ k[1, 1].T) * 0.3
    s[~allowed[4]] = float("-inf")
    torch.testing.assert_close(w[1, 3, 4], torch.softmax(s, -1))
    # differentiable in q (utility scores optimise a mask on q)
    qq = q.clone().requires_grad_()
    attention(qq, k, v, 0.3, qpos).sum().backward()
    assert qq.grad is not None and qq.grad.abs().sum() > 0


def test_all_ones_mask_leaves_logits_unchanged(loaded):
    model, a = loaded.model, loaded.anatomy
    ids = _ids(loaded)
    ref = _logits(model, ids)
    for m in (torch.ones(a.n_layers, a.n_heads, a.head_dim),
              torch.ones(a.n_layers, a.n_heads, a.head_dim, dtype=torch.bool)):
        with masked(model, m):
            torch.testing.assert_close(_logits(model, ids), ref, rtol=0, atol=0)
    assert _routed_off(model)


def test_zero_mask_changes_only_that_head(loaded):
    model, a = loaded.model, loaded.anatomy
    ids, layer, head = _ids(loaded), a.n_layers - 1, 1
    with torch.no_grad(), capture(model, layers=[layer], keep=("o",)) as st:
        model(ids)
    ref = st[layer].o
    mask = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    mask[layer, head] = 0
    with torch.no_grad(), masked(model, mask), capture(model, layers=[layer], keep=("o", "q")) as st2:
        model(ids)
    out = st2[layer].o
    assert (st2[layer].q[:, head] == 0).all()
    others = [h for h in range(a.n_heads) if h != head]
    torch.testing.assert_close(out[:, others], ref[:, others], rtol=0, atol=0)
    assert (out[:, head] - ref[:, head]).abs().max() > 1e-4
    assert _routed_off(model)


def test_model_restored_after_exception(loaded):
    model, a = loaded.model, loaded.anatomy
    ids = _ids(loaded)
    ref = _logits(model, ids)
    with pytest.raises(KeyError):
        with masked(model, torch.zeros(a.n_layers, a.n_heads, a.head_dim)):
            with capture(model):
                model(ids[:, :4])
                raise KeyError("boom")
    assert _routed_off(model)
    torch.testing.assert_close(_logits(model, ids), ref, rtol=0, atol=0)
    with pytest.raises(ValueError):  # wrong shape: refused, nothing left behind
        with masked(model, torch.ones(1, 1, 1)):
            pass
    assert _routed_off(model)


def test_mask_from_position_keeps_earlier_logits(loaded):
    model, a = loaded.model, loaded.anatomy
    ids, p = _ids(loaded, t=20), 12
    ref = _logits(model, ids)
    mask = theta_end_mask(a, "last", a.head_dim // 2,
                           [(l, h) for l in range(a.n_layers) for h in range(a.n_heads)])
    with masked(model, mask, from_position=p):
        out = _logits(model, ids)
    torch.testing.assert_close(out[:, :p], ref[:, :p], rtol=0, atol=0)
    assert (out[:, p:] - ref[:, p:]).abs().amax(-1).min() > 1e-4


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3", "tiny-phi", "smollm2"])
def test_masked_generate_with_cache_equals_full_forward(name):
    """Greedy generation with the KV cache under a mask from position p (inside the prompt)
    equals a cache-free forward of the final sequence with the same mask positions."""
    loaded = load_cached(name)
    model, a = loaded.model, loaded.anatomy
    prompt = _ids(loaded, t=14, b=1, seed=3)  # longer than tiny-gemma3's window of 8
    p, n = 11, 6
    mask = theta_end_mask(a, "last", a.head_dim // 4, [(l, h) for l in range(a.n_layers)
                                                       for h in range(0, a.n_heads, 2)])
    with masked(model, mask, from_position=p):
        gen = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             output_logits=True, return_dict_in_generate=True,
                             pad_token_id=loaded.tokenizer.pad_token_id)
        full = _logits(model, gen.sequences)
    t0 = prompt.shape[1]
    cached = torch.stack(gen.logits, 1)  # [1, n, V]: logits at positions t0-1 .. t0+n-2
    torch.testing.assert_close(cached, full[:, t0 - 1:t0 + n - 1], atol=1e-4, rtol=1e-4)
    unmasked = _logits(model, gen.sequences)
    assert (unmasked[:, p:] - full[:, p:]).abs().max() > 1e-4  # the mask did something
    assert _routed_off(model)


def test_capture_during_cached_decoding_sliding_window():
    """Decode steps of a sliding layer see only the cached window (q_idx is relative to it)."""
    loaded = load_cached("tiny-gemma3")
    model, layer = loaded.model, 0
    prompt = _ids(loaded, t=12, b=1)
    o_in = {}
    hook = model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
        lambda mod, args: o_in.__setitem__("x", args[0]))
    try:
        with capture(model, layers=[layer]) as st:
            model.generate(prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                           pad_token_id=0)
    finally:
        hook.remove()
    e = st[layer]
    # positions 0-11 prompt; the last pass feeds the 2nd generated token, at position 13
    assert e.q_pos.tolist() == [[13]] and e.k.shape[2] == 8
    assert e.q_idx.tolist() == [7]  # keys: positions 6..13
    ref = o_in["x"].view(1, 1, 4, 32).transpose(1, 2)
    torch.testing.assert_close(st.attention(layer), ref, atol=2e-5, rtol=1e-4)


def test_mask_helpers():
    a = load_cached("smollm2").anatomy
    m = theta_end_mask(a, "first", 8, [(0, 2), (5, 7)])
    assert m.shape == (30, 9, 64)
    assert (m[0, 2] == 0).nonzero().flatten().tolist() == [0, 1, 2, 3, 32, 33, 34, 35]
    assert (m[5, 7] == 0).sum() == 8 and (m == 0).sum() == 16
    last = theta_end_mask(a, "last", 8, [(0, 0)])
    assert (last[0, 0] == 0).nonzero().flatten().tolist() == [28, 29, 30, 31, 60, 61, 62, 63]
    u = torch.tensor([[0.1, 0.5, 0.9, 0.49]])
    assert utility_mask(u).tolist() == [[0.0, 1.0, 1.0, 0.0]]


def test_nested_contexts_route_once():
    model = load_cached("tiny-olmo2").model
    with capture(model):
        with masked(model, torch.ones(2, 4, 16)):
            assert model.config._attn_implementation == "ropedim_sdpa"
        assert model.config._attn_implementation == "ropedim_sdpa"
    assert _routed_off(model)


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-qwen2"])
def test_eager_attention_is_routed_too(name):
    """With attn_implementation="eager" the dispatcher delegates to the model's own eager
    function: capture and masking behave the same."""
    lo = load_cached(name, attn_implementation="eager")
    model, a = lo.model, lo.anatomy
    ids = _ids(lo, t=16)
    ref = _logits(load_cached(name).model, ids)  # the sdpa twin, same seed
    torch.testing.assert_close(_logits(model, ids), ref, atol=1e-5, rtol=1e-4)
    mask = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    mask[0, 0] = 0
    with torch.no_grad(), masked(model, mask), capture(model, layers=[0]) as st:
        model(ids)
    assert model.config._attn_implementation == "eager"
    assert (st[0].q[:, 0] == 0).all()
    torch.testing.assert_close(st.attention(0), st[0].o, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_left_padded_batch_with_key_mask(name):
    """Batches with left padding: attention() with key_mask = attention_mask reproduces the
    model's output at every real (non-pad) query."""
    lo = load_cached(name)
    model, a = lo.model, lo.anatomy
    ids = _ids(lo, t=14)
    am = torch.ones_like(ids)
    am[1, :5] = 0  # row 1: five pad tokens on the left
    ids[1, :5] = 0
    layer = 0  # a sliding layer for tiny-gemma3
    with torch.no_grad(), capture(model, layers=[layer]) as st:
        model(ids, attention_mask=am)
    e = st[layer]
    out = st.attention(layer, key_mask=am.bool())
    real = am.bool()[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], e.o[real], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_mask_before_rope_equals_masking_the_pre_rope_query(name):
    """BeforeRoPE(u): the model's logits equal those of a model whose pre-RoPE query (the
    q norm's or q_proj's output) is multiplied by u; a pair-symmetric u gives the same as
    masking after RoPE; u that splits pairs does not."""
    from ropedim.anatomy import q_pre_module
    from ropedim.hooks import BeforeRoPE
    from ropedim.rope import pair_partner

    lo = load_cached(name)
    model, a = lo.model, lo.anatomy
    ids = _ids(lo, t=16)
    g = torch.Generator().manual_seed(2)
    u = (torch.rand(a.n_layers, a.n_heads, a.head_dim, generator=g) > 0.4).float()

    def reference(mask):
        def hook(mod, args, out, layer):
            m = mask[layer]  # [H, Dh]
            if out.dim() == 3:  # [B, S, H*Dh]
                return out * m.reshape(-1)
            return out * m[None, :, None, :]  # [B, H, S, Dh]
        hs = [q_pre_module(attn).register_forward_hook(lambda mod, args, out, i=i: hook(mod, args, out, i))
              for i, attn in enumerate(attention_modules(model))]
        try:
            return _logits(model, ids)
        finally:
            for h in hs:
                h.remove()

    with masked(model, BeforeRoPE(u)):
        pre = _logits(model, ids)
    torch.testing.assert_close(pre, reference(u), atol=1e-4, rtol=1e-4)
    with masked(model, u):
        post = _logits(model, ids)
    assert (pre - post).abs().max() > 1e-3  # splitting rotary pairs differs after RoPE
    sym = u * u[..., pair_partner(a.head_dim, a.rotary_dim)]  # equal on both coordinates of each pair
    with masked(model, BeforeRoPE(sym)):
        pre_sym = _logits(model, ids)
    with masked(model, sym):
        torch.testing.assert_close(pre_sym, _logits(model, ids), rtol=0, atol=0)
    assert _routed_off(model)
