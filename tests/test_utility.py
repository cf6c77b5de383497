"""Utility scores (§5.2, Eq. 4): planted heads under every reading, the positional-sum
estimate against the exact sum, u before RoPE, bounds, determinism, batched == per head."""

from __future__ import annotations

import dataclasses

import torch

from ropedim.attention import key_bias
from ropedim.capture import LayerCapture
from ropedim.hooks import capture
from ropedim.models import load_cached
from ropedim.rope import inv_freq, rotate_storage, storage_cos_sin
from ropedim.utility import (READINGS, RoPE, UtilityConfig, _error_and_grad, prepare, query_rows,
                             utility_scores, utility_scores_loop)


def _caps(L=2, B=1, H=4, KVH=2, T=24, Tq=6, Dh=8, seed=0, windows=(None, 10)):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    caps = [LayerCapture(q=2 * r(B, H, Tq, Dh), k=r(B, KVH, T, Dh), v=r(B, KVH, T, Dh),
                         scaling=Dh**-0.5, window=windows[l % len(windows)]) for l in range(L)]
    return caps, torch.arange(T - Tq, T)


def _planted(irrelevant: slice, saturated: bool = False, seed: int = 0):
    """One head whose output provably ignores the query dims ``irrelevant``: the keys are
    zero there (or, saturated, the attention is one-hot whatever those dims do)."""
    caps, q_pos = _caps(L=1, H=1, KVH=1, T=16, Tq=4, seed=seed)
    c = caps[0]
    if saturated:  # every query matches key 2 by a margin of ~100 on the other dims
        c.k[..., 2, :] = 0.0
        c.k[..., 2, 4:] = 10.0
        c.q[..., 4:] = 10.0
        c.k[..., :4] = c.k[..., :4].clamp(-1, 1)
        c.q[..., :4] = c.q[..., :4].clamp(-1, 1)
    else:
        c.k[..., irrelevant] = 0.0
        c.v *= 10.0  # error ∝ |v|², so 1 - u ≈ α / (2 curvature) is small where it matters
    return caps, q_pos


def test_planted_dims_that_do_not_matter_get_zero():
    res = utility_scores([_planted(slice(0, 4))])
    u = res.u[0, 0]
    assert res.u.shape == (1, 1, 8) and bool(res.converged.all())
    torch.testing.assert_close(u[:4], torch.zeros(4), atol=1e-6, rtol=0)
    assert bool((u[4:] > 0.9).all()), u


def test_saturated_attention_dims_get_zero():
    u = utility_scores([_planted(slice(0, 4), saturated=True)]).u[0, 0]
    assert bool((u[:4] < 0.02).all()), u
    assert float(u[4:].sum()) > 0.1, u  # part of the margin is still needed


def test_bounds_and_determinism():
    caps, q_pos = _caps()
    cfg = UtilityConfig(max_steps=150)
    a, b = utility_scores([(caps, q_pos)], cfg), utility_scores([(caps, q_pos)], cfg)
    assert bool(((a.u >= 0) & (a.u <= 1)).all())
    assert torch.equal(a.u, b.u) and torch.equal(a.steps, b.steps)


def test_query_rows_are_seeded_and_unbiased():
    lit, qa = READINGS["literal"], READINGS["qa-sum"]
    rows, w = query_rows(lit, 300, 320, seed=3)
    assert torch.equal(rows, query_rows(lit, 300, 320, seed=3)[0])
    assert not torch.equal(rows, query_rows(lit, 300, 320, seed=4)[0])
    assert len(rows) == lit.context_rows + 20 and rows[-20:].tolist() == list(range(300, 320))
    assert float(w.sum()) == 320  # weights sum to the number of positions: an unbiased positional sum
    rows, w = query_rows(qa, 300, 320, seed=3)
    assert rows.tolist() == list(range(300, 320)) and bool((w == 1).all())
    rows, w = query_rows(lit, 20, 30, seed=0)  # a short context: every row, weight 1
    assert rows.tolist() == list(range(30)) and bool((w == 1).all())


def test_batched_equals_per_head_loop():
    """All heads at once == head by head (GQA, a sliding window, two examples of
    different lengths, per-head stopping)."""
    ex = [_caps(seed=1), _caps(T=20, Tq=5, seed=2)]
    cfg = UtilityConfig(max_steps=200, groups_per_chunk=3)
    a, b = utility_scores(ex, cfg), utility_scores_loop(ex, cfg)
    assert a.u.shape == (2, 4, 8)
    torch.testing.assert_close(a.u, b.u, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-4)
    assert torch.equal(a.steps, b.steps) and torch.equal(a.converged, b.converged)
    c = utility_scores([prepare(e, cfg) for e in ex], cfg)  # prepared as captured (the pipeline)
    assert torch.equal(a.u, c.u) and torch.equal(a.steps, c.steps)


def test_objective_is_a_mean_over_examples_and_stop_rule():
    """Repeating an example changes nothing (a mean over examples, under both reductions);
    summing over rows instead of averaging weighs the error more against α‖u‖₁; tol=0
    runs max_steps."""
    caps, q_pos = _caps(L=1)
    cfg = UtilityConfig(max_steps=60, tol=0.0)
    for reduce in ("sum", "mean"):
        one = utility_scores([(caps, q_pos)], cfg, reduce)
        two = utility_scores([(caps, q_pos), (caps, q_pos)], cfg, reduce)
        torch.testing.assert_close(one.u, two.u, atol=1e-5, rtol=0)
        assert bool((one.steps == 60).all()) and not bool(one.converged.any())
    summed, mean = (utility_scores([(caps, q_pos)], cfg, r).u for r in ("sum", "mean"))
    assert float(summed.mean()) > float(mean.mean())


def test_hand_gradient_equals_autograd():
    caps, q_pos = _caps()
    ex = prepare((caps, q_pos))
    idx = torch.arange(ex.qa.shape[0])
    u = torch.rand(*ex.qa.shape[:1], ex.qa.shape[2], ex.qa.shape[-1],
                   generator=torch.Generator().manual_seed(0)).requires_grad_()
    # plain reference: softmax attention of each head with q ⊙ u, masks from key_bias
    err = []
    for c, e in zip(caps, range(0, len(caps) * 2, 2)):
        H, KVH = c.q.shape[1], c.k.shape[1]
        uh = u[e:e + KVH].reshape(H, -1)[None, :, None]  # [1, H, 1, Dh]
        k = c.k.repeat_interleave(H // KVH, 1)
        v = c.v.repeat_interleave(H // KVH, 1)
        bias = key_bias(q_pos, k.shape[2], c.window)
        att = lambda qq: ((qq @ k.transpose(-1, -2)) * c.scaling + bias).softmax(-1) @ v
        err.append((att(c.q * uh) - att(c.q)).pow(2).sum((0, 2, 3)) / q_pos.numel())
    err = torch.cat(err)
    grad = torch.autograd.grad(err.sum(), u)[0]
    e2, g2 = _error_and_grad(ex, u.detach(), idx, float(q_pos.numel()), True)
    torch.testing.assert_close(e2.flatten(), err.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g2, grad, atol=1e-5, rtol=1e-4)


def test_runs_on_a_model_capture():
    """Captures from ropedim.hooks (a mapping, q_pos [B, S]) go in as they are."""
    model = load_cached("tiny-llama").model
    ids = torch.randint(3, 259, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture(model, positions=torch.arange(30, 40), keep=("q", "k", "v")) as cap:
        model(ids)
    res = utility_scores([cap], UtilityConfig(max_steps=50))
    L, H, Dh = len(cap), cap[0].q.shape[1], cap[0].q.shape[-1]
    assert res.u.shape == (L, H, Dh) and res.loss.shape == (L, H)
    assert bool(torch.isfinite(res.loss).all())


# ---------------------------------------------------------------- u before RoPE

def _rope_caps(L=2, H=4, KVH=2, T=40, Dh=8, rotary_dim=8, seed=0, base=100.0):
    """Captures with a pre-RoPE query: q = s·R(q_pre) at positions 0..T-1 (all rows)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    theta = torch.stack([inv_freq(rotary_dim, base * (l + 1)) for l in range(L)])
    rope = RoPE(theta, rotary_dim, tuple(1.0 + 0.1 * l for l in range(L)))
    caps = []
    for l in range(L):
        q_pre = 2 * r(1, H, T, Dh)
        cos, sin = storage_cos_sin(theta[l], torch.arange(T), Dh)
        q = rope.attention_scaling[l] * rotate_storage(q_pre, cos, sin, rotary_dim)
        caps.append(LayerCapture(q=q, q_pre=q_pre, k=r(1, KVH, T, Dh), v=r(1, KVH, T, Dh), scaling=Dh ** -0.5,
                                 window=(None, 12)[l % 2]))
    return caps, rope


def test_before_rope_with_u_one_is_the_models_query():
    """A ⊙ 1 + B ⊙ 1 = the post-RoPE query, also with partial rotary and attention scaling."""
    for rotary_dim in (8, 4):
        caps, rope = _rope_caps(rotary_dim=rotary_dim)
        q_pos = torch.arange(10, 40)
        pre, post = prepare((caps, q_pos), rope=rope), prepare((caps, q_pos))
        torch.testing.assert_close(pre.qa + pre.qb, post.qa, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pre.target, post.target, atol=1e-5, rtol=1e-5)


def test_hand_gradient_before_rope_with_weights():
    caps, rope = _rope_caps(rotary_dim=4)
    q_pos = torch.arange(20, 40)
    w = torch.rand(20, generator=torch.Generator().manual_seed(1)) * 3
    ex = prepare((caps, q_pos), weights=w, rope=rope)
    idx = torch.arange(ex.qa.shape[0])
    u = torch.rand(ex.qa.shape[0], ex.qa.shape[2], ex.qa.shape[-1],
                   generator=torch.Generator().manual_seed(0)).requires_grad_()
    err = []
    for layer, c in enumerate(caps):  # reference: autograd through R(u ⊙ q_pre)
        H, KVH = c.q.shape[1], c.k.shape[1]
        uh = u[2 * layer:2 * layer + KVH].reshape(H, -1)[None, :, None]
        cos, sin = storage_cos_sin(rope.theta[layer], q_pos, 8)
        q = rope.attention_scaling[layer] * rotate_storage(c.q_pre[:, :, q_pos] * uh, cos, sin, rope.rotary_dim)
        k, v = (x.repeat_interleave(H // KVH, 1) for x in (c.k, c.v))
        bias = key_bias(q_pos, k.shape[2], c.window)
        att = lambda qq: ((qq @ k.transpose(-1, -2)) * c.scaling + bias).softmax(-1) @ v
        q0 = c.q[:, :, q_pos]
        err.append(((att(q) - att(q0)).pow(2).sum(-1) * w).sum((0, 2)) / 2.0)
    err = torch.cat(err)
    grad = torch.autograd.grad(err.sum(), u)[0]
    e2, g2 = _error_and_grad(ex, u.detach(), idx, 2.0, True)
    torch.testing.assert_close(e2.flatten(), err.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g2, grad, atol=1e-4, rtol=1e-4)


def test_primary_reading_on_a_planted_head():
    """The literal reading (every position, summed, u before RoPE) on a head whose output
    ignores two rotary pairs (its keys are zero there): u ≈ 0 on those pairs, u ≈ 1 on the
    pairs that matter."""
    caps, rope = _rope_caps(L=1, H=1, KVH=1, T=48, seed=5)
    c = caps[0]
    c.k[..., [0, 1, 4, 5]] = 0.0  # pairs 0 and 1 (storage j, j + 4)
    c.v *= 10.0
    lit = READINGS["literal"]
    rows, w = query_rows(lit, 40, 48, seed=0)
    res = utility_scores([prepare((caps, rows), weights=w, rope=rope)], reduce=lit.reduce)
    u = res.u[0, 0]
    torch.testing.assert_close(u[[0, 1, 4, 5]], torch.zeros(4), atol=1e-6, rtol=0)
    assert bool((u[[2, 3, 6, 7]] > 0.95).all()), u


def test_the_estimate_gives_the_exact_sums_u():
    """Every question/answer row plus a sample of context rows, weighted up, gives the u of
    the exact sum over every row (short inputs, where both can be done): mean |Δu| < 0.02
    and no dim crosses 0.5 by more than 0.1."""
    caps, rope = _rope_caps(L=2, H=4, KVH=2, T=200, seed=7)
    exact_rows = torch.arange(200)
    est = READINGS["literal"]  # its sample: 32 of the 180 context rows
    rows, w = query_rows(est, 180, 200, seed=0)
    cfg = UtilityConfig(max_steps=300)
    exact = utility_scores([prepare((caps, exact_rows), cfg, rope=rope)], cfg, "sum").u
    sampled = utility_scores([prepare((caps, rows), cfg, weights=w, rope=rope)], cfg, "sum").u
    assert float((exact - sampled).abs().mean()) < 0.02, (exact - sampled).abs().mean()
    crossed = ((exact < 0.5) != (sampled < 0.5)) & ((exact - 0.5).abs() > 0.1)
    assert not bool(crossed.any())


def test_before_rope_parts_match_every_architecture():
    """On every tiny architecture (llama3 θ scaling, q/k norms before RoPE, sliding windows
    with two bases, partial rotary), the pre-RoPE query captured from the model, rotated by
    the anatomy's θ (A + B), is the model's own post-RoPE query."""
    from ropedim.models import TINY_MODELS

    for name in TINY_MODELS:
        lo = load_cached(name)
        ids = torch.randint(3, 259, (1, 30), generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), capture(lo.model, keep=("q_pre", "q", "k", "v")) as cap:
            lo.model(ids)
        q_pos = torch.arange(10, 30)
        pre, post = prepare((dict(cap), q_pos), rope=RoPE.of(lo.anatomy)), prepare((dict(cap), q_pos))
        torch.testing.assert_close(pre.qa + pre.qb, post.qa, atol=1e-5, rtol=1e-4, msg=name)
