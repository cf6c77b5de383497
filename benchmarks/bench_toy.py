"""Speed of the controlled experiment: ours against a straightforward PyTorch loop.

Both train App. A's configuration (n=1000, 128 dims, 128 of 1000 pairs, max position
2048, batch 64) for the same number of steps, in one run; the paper's 100 epochs are
extrapolated from the per-step time. Ours trains both setups in one stacked model with a
compiled step. Run: ``python benchmarks/bench_toy.py [steps]``.
"""

import math
import sys
import time

import torch

from ropedim import rope, toy


def plain_train(cfg: toy.ToyConfig, use_rope: bool, steps: int, seed: int = 0) -> float:
    """One setup at a time, in eager PyTorch, RoPE recomputed each step: the loop one
    would write first (vectorised sampling, autograd, Adam)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.nn.Parameter(torch.randn(cfg.n, cfg.dim, generator=g)) for _ in range(3))
    opt = torch.optim.Adam([q, k, v], lr=cfg.lr)
    theta = rope.inv_freq(cfg.dim, cfg.base)
    for _ in range(steps):
        target = torch.randint(cfg.n, (cfg.batch,), generator=g)
        weights = torch.ones(cfg.batch, cfg.n).scatter_(1, target[:, None], 0.0)
        others = torch.multinomial(weights, cfg.subset - 1, generator=g)
        subset = torch.cat([target[:, None], others], dim=1)  # [B, S]
        pos = torch.randint(cfg.max_position, subset.shape, generator=g)
        qq, kk = q[target], k[subset]
        if use_rope:
            qq = rope.apply_half_split(qq, torch.full((cfg.batch,), cfg.max_position), theta)
            kk = rope.apply_half_split(kk, pos, theta)
        w = torch.softmax((kk @ qq[:, :, None]).squeeze(-1) / math.sqrt(cfg.dim), -1)
        a = (w[:, :, None] * v[subset]).sum(1)
        loss = torch.nn.functional.cross_entropy(a @ v.T, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def ours_train(cfg: toy.ToyConfig, steps: int) -> None:
    epochs = max(1, steps * cfg.batch // cfg.samples_per_epoch)
    toy.train(toy.with_overrides(cfg, epochs=epochs, eval_samples=64), seeds=(0,), progress=False)


def main(steps: int = 300) -> None:
    cfg = toy.PAPER
    t0 = time.perf_counter()
    for r in (True, False):
        plain_train(cfg, r, steps)
    plain = (time.perf_counter() - t0) / (2 * steps)
    per_epoch = math.ceil(cfg.samples_per_epoch / cfg.batch)
    ours_train(cfg, per_epoch)  # warm-up: compilation
    t0 = time.perf_counter()
    ours_train(cfg, 2 * per_epoch)
    ours = (time.perf_counter() - t0) / (2 * per_epoch)
    full = cfg.steps
    print(f"plain loop : {1e3 * plain:7.1f} ms/step per setup -> paper config, both setups: "
          f"{2 * plain * full / 60:5.1f} min")
    print(f"ropedim    : {1e3 * ours:7.1f} ms/step for both   -> paper config, both setups: "
          f"{ours * full / 60:5.1f} min")
    print(f"speed-up   : {2 * plain / ours:.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
