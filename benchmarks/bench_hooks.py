"""Overhead of the instrumentation on SmolLM2-135M: a plain forward against the same
forward under ``capture`` (all layers, the last 64 query positions) and ``masked``, and
the chunked recomputation ``attention`` for one layer against the model's captured output.
Run: ``python benchmarks/bench_hooks.py [tokens] [threads]`` (defaults 512, 1).
"""

import sys
import time

import torch

from ropedim.hooks import capture, masked
from ropedim.qa.masks import theta_end_mask
from ropedim.models import load_cached


def timed(fn, reps=3):
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main(t: int = 512, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    lo = load_cached("smollm2")
    model, a = lo.model, lo.anatomy
    ids = torch.randint(3, 40000, (1, t), generator=torch.Generator().manual_seed(0))
    sel = slice(t - 64, t)

    def plain():
        with torch.no_grad():
            model(ids, use_cache=False)

    def captured():
        with torch.no_grad(), capture(model, positions=sel):
            model(ids, use_cache=False)

    mask = theta_end_mask(a, "first", 8, [(l, h) for l in range(a.n_layers) for h in range(a.n_heads)])

    def with_mask():
        with torch.no_grad(), masked(model, mask):
            model(ids, use_cache=False)

    with torch.no_grad(), capture(model, layers=[15], positions=sel) as st:
        model(ids, use_cache=False)
    e = st[15]

    def recompute():
        e.attention()

    err = (e.attention() - e.o).abs().max().item()
    base = timed(plain)
    print(f"SmolLM2-135M, {t} tokens, {torch.get_num_threads()} threads")
    print(f"plain forward          {base * 1e3:8.1f} ms")
    print(f"capture (30 layers)    {timed(captured) * 1e3:8.1f} ms")
    print(f"masked (all heads)     {timed(with_mask) * 1e3:8.1f} ms")
    print(f"attention(), 1 layer   {timed(recompute) * 1e3:8.1f} ms  (max |diff| {err:.1e})")


if __name__ == "__main__":
    main(*(int(x) for x in sys.argv[1:3]))
