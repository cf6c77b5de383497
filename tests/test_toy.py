"""The controlled experiment (§4): config checks, the training loop, and the control
that makes every toy claim test fail."""

import pytest
import torch

from claims.table import Toy, checks_for
from ropedim import toy
from ropedim.measures import MEASURES
from ropedim.verdict import SUPPORTED, judge

TINY = toy.ToyConfig(n=40, dim=16, subset=8, max_position=64, epochs=2, samples_per_epoch=256,
                     eval_samples=64, lr=1e-2)


@pytest.mark.parametrize("bad, match", [
    (dict(subset=2000), "subset"), (dict(dim=127), "even"), (dict(max_position=0), "max_position"),
    (dict(lr=0), "lr"), (dict(epochs=0), "epochs"), (dict(n=1), "n=1"),
])
def test_nonsense_configs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        toy.with_overrides(toy.PAPER, **bad)


def test_paper_config_is_app_a():
    p = toy.PAPER
    assert (p.n, p.dim, p.subset, p.max_position, p.lr, p.batch, p.samples_per_epoch, p.epochs) == \
        (1000, 128, 128, 2048, 1e-3, 64, 10000, 100)
    assert p.steps == 100 * 157


def test_subsets_hold_the_target_once_and_no_repeats():
    target, subset, pos = toy._sample(torch.Generator().manual_seed(0), 2, 500, TINY)
    assert ((subset == target[..., None]).sum(-1) == 1).all()
    s = subset.sort(-1).values
    assert (s[..., 1:] != s[..., :-1]).all()
    assert pos.min() >= 0 and pos.max() < TINY.max_position


def test_relative_rotation_gives_llama_scores():
    """Rotating only the key by −Δ equals RoPE on q at max_position and k at its position."""
    from ropedim.rope import inv_freq, rotate
    stack = toy._Stack(TINY, [True], [0], compile=False)
    t, s, p = toy._sample(torch.Generator().manual_seed(1), 1, 4, TINY)
    theta = inv_freq(TINY.dim)
    q = rotate(stack.q[t[0]], torch.tensor(TINY.max_position), theta)  # [B, d]
    k = rotate(stack.k[s[0]], p[0], theta)  # [B, S, d]
    w = torch.softmax(torch.einsum("bd,bsd->bs", q, k) / TINY.dim ** 0.5, -1)
    logits = torch.einsum("bs,bsd,nd->bn", w, stack.v[s[0]], stack.v)
    ref = torch.nn.functional.cross_entropy(logits, t[0], reduction="none")
    assert torch.allclose(stack.losses(t, s, p)[0], ref, atol=1e-4)


def test_training_is_deterministic_and_learns():
    a = toy.train(TINY, seeds=(3,), progress=False, compile=False)
    b = toy.train(TINY, seeds=(3,), progress=False, compile=False)
    for x, y in zip(a, b):
        assert torch.equal(x.q, y.q) and x.train_loss == y.train_loss
        assert x.train_loss[-1] < x.train_loss[0]


@pytest.mark.parametrize("check", checks_for(Toy), ids=lambda c: c.test_id("toy"))
def test_each_toy_claim_fails_on_the_control(check, toy_runs, settings):
    """Give each toy claim test the other setup's runs (the heads trained with RoPE as the
    ones without, and back): it must not come out supported. The runs are the default
    profile's, the same the claim tests use."""
    control = {init: {"rope": r["norope"], "norope": r["rope"]} for init, r in toy_runs.items()}
    est = MEASURES[check.measure](control, seed=settings.seed, **check.args).estimate
    assert judge(est, check.criterion).outcome != SUPPORTED
