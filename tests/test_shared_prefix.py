"""Shared-prefix attention equals attention over each row's whole sequence."""

from types import SimpleNamespace

import pytest
import torch

from ropedim.attention import attention
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
