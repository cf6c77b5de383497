"""Utility scores (§5.2, Eq. 4): planted heads, bounds, determinism, batched == per head."""

from __future__ import annotations

import dataclasses

import torch

from ropedim.attention import key_bias
from ropedim.capture import LayerCapture
from ropedim.hooks import capture
from ropedim.models import load_cached
from ropedim.utility import (UtilityConfig, _error_and_grad, prepare, utility_scores,
                             utility_scores_loop)


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
    cfg = UtilityConfig(max_steps=150, max_queries=4, seed=3)
    a, b = utility_scores([(caps, q_pos)], cfg), utility_scores([(caps, q_pos)], cfg)
    assert bool(((a.u >= 0) & (a.u <= 1)).all())
    assert torch.equal(a.u, b.u) and torch.equal(a.steps, b.steps)
    c = utility_scores([(caps, q_pos)], dataclasses.replace(cfg, seed=4))  # other queries
    assert not torch.equal(a.u, c.u)


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


def test_error_is_a_mean_over_queries_and_stop_rule():
    """Repeating an example changes nothing (mean, not sum); tol=0 runs max_steps."""
    caps, q_pos = _caps(L=1)
    cfg = UtilityConfig(max_steps=60, tol=0.0)
    one = utility_scores([(caps, q_pos)], cfg)
    two = utility_scores([(caps, q_pos), (caps, q_pos)], cfg)
    torch.testing.assert_close(one.u, two.u, atol=1e-5, rtol=0)
    assert bool((one.steps == 60).all()) and not bool(one.converged.any())


def test_hand_gradient_equals_autograd():
    caps, q_pos = _caps()
    ex = prepare((caps, q_pos))
    idx = torch.arange(ex.qs.shape[0])
    u = torch.rand(*ex.qs.shape[:1], ex.qs.shape[2], ex.qs.shape[-1],
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
    e2, g2 = _error_and_grad(ex, u.detach(), idx, q_pos.numel(), True)
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
