"""Claim C2 (Eq. 2) and the dimension convention, as property tests."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from hypothesis.extra.numpy import arrays
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from ropedim import rope

DIMS = st.sampled_from([2, 8, 16, 64, 128])
floats = st.floats(-10, 10, width=32)
pos = st.integers(0, 4096)


def vec(dim):
    return arrays("float32", (dim,), elements=floats).map(torch.from_numpy)


@given(data=st.data(), dim=DIMS, m=pos, n=pos, shift=pos, base=st.sampled_from([1e4, 1e5, 1e6]))
def test_score_depends_only_on_relative_position(data, dim, m, n, shift, base):
    """Eq. 2: RoPE(q_m)·RoPE(k_n) = q_mᵀ M_{n−m} k_n, so shifting both positions keeps it."""
    q, k = data.draw(vec(dim)), data.draw(vec(dim))
    theta = rope.inv_freq(dim, base)
    q64, k64, th64 = q.double(), k.double(), theta.double()
    s = rope.rotate(q64, torch.tensor(m), th64) @ rope.rotate(k64, torch.tensor(n), th64)
    s_shift = rope.rotate(q64, torch.tensor(m + shift), th64) @ rope.rotate(k64, torch.tensor(n + shift), th64)
    s_rel = q64 @ rope.rotate(k64, torch.tensor(n - m), th64)
    scale = 1 + q64.norm() * k64.norm()
    assert abs(s - s_shift) <= 1e-9 * scale
    assert abs(s - s_rel) <= 1e-9 * scale


@given(data=st.data(), dim=DIMS, m=pos)
def test_rotation_preserves_norm(data, dim, m):
    x = data.draw(vec(dim)).double()
    theta = rope.inv_freq(dim).double()
    for f in (rope.rotate, rope.apply_half_split):
        y = f(x, torch.tensor(m), theta)
        assert torch.allclose(y.norm(), x.norm(), rtol=1e-10, atol=1e-10)


@given(data=st.data(), dim=DIMS, m=pos)
def test_half_split_equals_transformers(data, dim, m):
    """Our half-split rotation is Hugging Face's ``apply_rotary_pos_emb`` for the same θ."""
    x = data.draw(vec(dim)).double()
    theta = rope.inv_freq(dim).double()
    ang = m * theta
    emb = torch.cat((ang, ang))
    ours = rope.apply_half_split(x, torch.tensor(m), theta)
    hf, _ = apply_rotary_pos_emb(x[None, None, None], x[None, None, None], emb.cos()[None, None], emb.sin()[None, None])
    assert torch.allclose(ours, hf.flatten(), atol=1e-9)


@given(data=st.data(), dim=DIMS, m=pos)
def test_half_split_is_paper_layout_reordered(data, dim, m):
    """Storage j and j + D of the half-split layout are pair j of the paper's layout."""
    x = data.draw(vec(dim)).double()
    theta = rope.inv_freq(dim).double()
    rank = rope.theta_rank_of_storage(theta, dim, "half")
    order = rope.storage_order(rank)  # storage indices in paper order
    half = rope.apply_half_split(x, torch.tensor(m), theta)
    paper = rope.rotate(x[order], torch.tensor(m), theta)
    assert torch.allclose(half[order], paper, atol=1e-9)


def test_first_and_last_16_of_a_128_head():
    """CLAIMS.md: in the half-split layout the first 16 are storage 0-7 and 64-71, the
    last 16 are 56-63 and 120-127."""
    rank = rope.theta_rank_of_storage(rope.inv_freq(128), 128, "half")
    first = rope.first_last_mask(rank, "first", 16).nonzero().flatten().tolist()
    last = rope.first_last_mask(rank, "last", 16).nonzero().flatten().tolist()
    assert first == [*range(0, 8), *range(64, 72)]
    assert last == [*range(56, 64), *range(120, 128)]


def test_partial_rotary_and_interleaved_ranks():
    theta = rope.inv_freq(8)  # 4 rotating pairs in a head of 16
    rank = rope.theta_rank_of_storage(theta, 16, "half")
    assert rank[:8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert rank[8:].tolist() == [4, 4, 5, 5, 6, 6, 7, 7]  # non-rotating dims rank last
    inter = rope.theta_rank_of_storage(theta, 8, "interleaved")
    assert inter.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_scaled_theta_ranks_follow_the_actual_frequencies():
    theta = torch.tensor([1.0, 0.01, 0.1, 0.001])  # not monotone in storage order
    rank = rope.theta_rank_of_storage(theta, 8, "half")
    assert rank[:4].tolist() == [0, 2, 1, 3]


@pytest.mark.parametrize("bad", [0, 3, -2])
def test_bad_dims_are_refused(bad):
    with pytest.raises(ValueError, match="even"):
        rope.inv_freq(bad)
