"""Shared-prefix attention equals attention over each row's whole sequence."""

from types import SimpleNamespace

import pytest
import torch

from ropedim.attention import attention, cpu_flash_sdpa_with_lse, merge_lse, position_bias, sdpa_with_lse
from ropedim.shared_prefix import SharedPrefix, attend, prefill, trie

B, V, KVH, G, DH, L = 2, 3, 2, 2, 8, 2


def _case(window, rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, tc, s = KVH * G, 7, 3
    prefix_pos = torch.tensor([[-1, -1, 0, 1, 2, 3, 4], list(range(tc))])  # context 0 left-padded
    keys = [torch.randn(B, KVH, tc, DH, generator=g) for _ in range(L)]
    values = [torch.randn(B, KVH, tc, DH, generator=g) for _ in range(L)]
    masks = (torch.rand(V, L, h, DH, generator=g) > 0.3).float()
    ctx_len = (prefix_pos >= 0).sum(1)
    rows = torch.tensor(rows)
    q_pos = torch.stack([torch.tensor([-1, 0, 1]) if r % 2 else torch.arange(s) for r in rows.tolist()])
    q_pos = torch.where(q_pos >= 0, q_pos + ctx_len[rows // V, None], -1)  # row 1, 3, ...: one pad
    st = SharedPrefix(keys, values, prefix_pos, V, rows, q_pos)
    q = torch.randn(len(rows), h, s, DH, generator=g)
    k = torch.randn(len(rows), KVH, s, DH, generator=g)
    v = torch.randn(len(rows), KVH, s, DH, generator=g)
    return st, q, k, v, masks


MODULE = SimpleNamespace(config=SimpleNamespace())


@pytest.mark.parametrize("window", [None, 2, 4])
@pytest.mark.parametrize("rows", [list(range(B * V)), [0, 2, 5]], ids=["all-rows", "some-rows"])
@pytest.mark.parametrize("layer", range(L))
def test_equals_attention_over_the_concatenation(window, rows, layer):
    st, q, k, v, masks = _case(window, rows)
    qm = q * masks[st.rows % V, layer][:, :, None, :]  # each row under its variant's mask (hooks.masked)
    out, _ = attend(MODULE, qm, k, v, None, scaling=0.3, sliding_window=window, state=st, layer=layer)
    for i, r in enumerate(rows):
        b = r // V
        kk = torch.cat([st.keys[layer][b], k[i]], dim=1)[None]
        vv = torch.cat([st.values[layer][b], v[i]], dim=1)[None]
        kpos = torch.cat([st.prefix_pos[b], st.suffix_pos[i]])
        real = st.suffix_pos[i] >= 0  # padded queries are not compared, only finite
        ref = attention(qm[i][None], kk, vv, 0.3, st.suffix_pos[i], window, k_positions=kpos, key_mask=(kpos >= 0)[None])
        torch.testing.assert_close(out[i].transpose(0, 1)[:, real], ref[0][:, real], rtol=1e-5, atol=1e-5)
        assert torch.isfinite(out[i]).all()


def test_window_hides_far_prefix_keys():
    def run(shift):
        st, q, k, v, _ = _case(2, [1])
        st.values[0][0] += shift  # context 0's prefix: outside a window of 2 for every query but the first
        return attend(MODULE, q, k, v, None, scaling=1.0, sliding_window=2, state=st, layer=0)[0][0]  # [S, H, Dh]
    seen, again = run(0.0), run(100.0)
    assert torch.equal(seen[2], again[2]) and not torch.equal(seen[1], again[1])


def test_trie():
    seqs = [[1, 2, 3, 4], [1, 2, 5], [1, 2, 3], [7], [1, 2, 3, 4]]
    nodes, leaf = trie(seqs)
    spelled = []
    for i in leaf:  # each sequence is spelled by its path
        toks = []
        while i >= 0:
            toks, i = nodes[i].tokens + toks, nodes[i].parent
        spelled.append(toks)
    assert spelled == seqs
    assert sum(len(n.tokens) for n in nodes) == 6  # 1 2 | 3 | 4 | 5 | 7: each shared token once
    assert all(n.parent < i for i, n in enumerate(nodes))
    with pytest.raises(ValueError, match="empty"):
        trie([[1], []])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_prefill_equals_a_forward_pass(name):
    from transformers import DynamicCache
    from ropedim.models import load_cached

    model = load_cached(name).model
    g = torch.Generator().manual_seed(1)
    base = torch.randint(3, 200, (40,), generator=g).tolist()  # tiny-gemma3's window is shorter
    seqs = [base[:30] + [5, 6], base[:30] + [7] * 9, base[:12], torch.randint(3, 200, (25,), generator=g).tolist()]
    keys, values, pos = prefill(model, seqs)
    for i, s in enumerate(seqs):
        cache = DynamicCache()
        with torch.inference_mode():
            model(input_ids=torch.tensor([s]), past_key_values=cache, use_cache=True)
        assert pos[i].tolist() == [-1] * (pos.shape[1] - len(s)) + list(range(len(s)))
        for layer, la in enumerate(cache.layers):
            torch.testing.assert_close(keys[layer][i, :, pos.shape[1] - len(s):], la.keys[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(values[layer][i, :, pos.shape[1] - len(s):], la.values[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the kernel: portable, float32, as before

def _kernel_case(seed, causal, dtype, blind=False):
    g = torch.Generator().manual_seed(seed)
    n, kvh, rows, t, dh = 3, 2, (2, 3), 11, 8
    s = t if causal else 4
    q = torch.randn(n, kvh, *rows, s, dh, generator=g).to(dtype)
    k, v = (torch.randn(n, kvh, t, dh, generator=g).to(dtype) for _ in range(2))
    bias = None
    if not causal:
        kpos = torch.arange(t).repeat(n, 1)
        kpos[0, :3] = -1  # context 0 left-padded
        if blind:
            kpos[1] = -1  # context 1: no visible key at all
        qpos = torch.tensor([[t, t + 1, t + 2, t + 3]]).repeat(n, 1)
        bias = position_bias(qpos, kpos, window=8)[:, None, None, None]  # [N, 1, 1, 1, S, T]
    return q, k, v, bias


@pytest.mark.parametrize("causal", [False, True], ids=["bias", "causal"])
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_portable_kernel_equals_the_old_cpu_kernel(causal, chunk):
    """The fast sweep's kernel (any device) against the CPU-only fused one it replaced."""
    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        pytest.skip("this torch build has no CPU flash-attention kernel to compare with")
    q, k, v, bias = _kernel_case(0, causal, torch.float32, blind=not causal)
    out, lse = sdpa_with_lse(q, k, v, bias, causal=causal, scale=0.3, chunk=chunk)
    ref_out, ref_lse = cpu_flash_sdpa_with_lse(q, k, v, bias, causal=causal, scale=0.3)
    assert out.dtype == lse.dtype == torch.float32 and out.shape == q.shape and lse.shape == (*q.shape[:-1], 1)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)  # -inf where no key is seen, on both
    if not causal:
        assert bool((lse[1] == float("-inf")).all()) and bool((out[1] == 0).all())


@pytest.mark.parametrize("causal", [False, True], ids=["bias", "causal"])
def test_bfloat16_inputs_accumulate_in_float32(causal):
    """bf16 q, K, V give what their exact float32 values give (scores, softmax statistics
    and outputs in float32); a bf16 accumulator would be off by ~1e-2."""
    q, k, v, bias = _kernel_case(1, causal, torch.bfloat16)
    out, lse = sdpa_with_lse(q, k, v, bias, causal=causal, scale=0.3)
    ref_out, ref_lse = sdpa_with_lse(q.float(), k.float(), v.float(), bias, causal=causal, scale=0.3)
    assert out.dtype == lse.dtype == torch.float32
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-6, atol=1e-6)


def test_merged_halves_equal_the_whole():
    q, k, v, bias = _kernel_case(2, False, torch.float32)
    whole = sdpa_with_lse(q, k, v, bias, scale=0.3)
    a, b = (sdpa_with_lse(q, k[:, :, sl], v[:, :, sl], bias[..., sl], scale=0.3) for sl in (slice(0, 5), slice(5, None)))
    torch.testing.assert_close(merge_lse(a[0], a[1], b[0], b[1]), whole[0], rtol=1e-5, atol=1e-6)


def test_bias_needs_the_query_dims():
    q, k, v, bias = _kernel_case(0, False, torch.float32)
    with pytest.raises(ValueError, match="give it the query's dims"):
        sdpa_with_lse(q, k, v, bias[0])


def test_fast_sweep_calls_no_cpu_only_operator():
    """Every aten op the fast sweep dispatches (prefill and decoding, tiny-gemma3's sliding
    window included) has a CUDA kernel: the CPU flash-attention op is never called."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ropedim.generation import sweep
    from ropedim.models import load_cached
    from ropedim.prompts import build_prompts
    from ropedim.qa_data import synthetic_task

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    lm = load_cached("tiny-gemma3")
    a = lm.anatomy
    mask = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    mask[:, :, :4] = 0
    with Ops() as ops:
        sweep(lm, None, build_prompts(synthetic_task(2, 2, 0, seed=0), "plain"), {"none": None, "m": mask},
              "fast", 4, batch_size=2, cache=False)
    assert "aten.embedding" in ops.seen  # the mode saw the model run
    assert not {op for op in ops.seen if "for_cpu" in op or "flash_attention" in op}, sorted(ops.seen)
