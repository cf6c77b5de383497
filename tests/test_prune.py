"""Beyond the paper, the efficiency (ropedim.prune, issue 14): a model whose pruned dims are
removed from q and k (a smaller score computation) gives the masked model's outputs; what
pruning saves, K cache included under GQA."""

import pytest
import torch

from ropedim import models
from ropedim.hooks import masked
from ropedim.prune import pruned, savings
from ropedim.rope import pair_partner

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs_keep(a, seed):
    """A keep mask of whole rotary pairs, different in every head (some heads keep all)."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(a.n_layers, a.n_heads, a.head_dim, generator=g) > 0.4
    keep = keep & keep[..., pair_partner(a.head_dim, a.rotary_dim)]  # a pair goes whole
    keep[0, 0] = True
    return keep


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_pruned_equals_masked(name):
    loaded = models.load_cached(name)
    model, a = loaded.model, loaded.anatomy
    keep = _pairs_keep(a, 0)
    keep[-1, -1] = False  # a head with every dim pruned: uniform attention in both
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=g)
    att = torch.ones_like(ids)
    att[1, 17:] = 0  # right padding in the second row
    with torch.no_grad():
        for kw in ({"input_ids": ids[:1]}, {"input_ids": ids, "attention_mask": att}):
            with masked(model, keep.float()):
                ref = model(**kw).logits
            with pruned(model, keep):
                got = model(**kw).logits
            ok = kw.get("attention_mask", torch.ones_like(kw["input_ids"])).bool()
            torch.testing.assert_close(got[ok], ref[ok], rtol=1e-4, atol=1e-4)
            assert not torch.allclose(model(**kw).logits[ok], ref[ok], atol=1e-3)  # the mask acts


def test_savings_count_k_cache_only_where_a_whole_kv_group_prunes():
    keep = torch.ones(2, 4, 8, dtype=torch.bool)  # 2 layers, 4 query heads over 2 KV heads, 8 dims
    keep[:, :, :2] = False  # the first 2 dims of every head
    s = savings(keep, n_kv_heads=2)
    assert s["score_flops"] == pytest.approx(2 / 8) and s["k_cache"] == pytest.approx(2 / 8)
    assert s["kv_cache"] == pytest.approx(1 / 8)
    keep = torch.ones(2, 4, 8, dtype=torch.bool)
    keep[:, 0, :4] = False  # one query head of a group: scores shrink, the shared K does not
    s = savings(keep, n_kv_heads=2)
    assert s["score_flops"] == pytest.approx(4 / 32) and s["k_cache"] == 0
