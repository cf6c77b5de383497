"""Utility scores (§5.2, Eq. 4) on SmolLM2-135M-Instruct: all 270 heads optimised as one
batched problem against the same optimisation run head by head, the same number of steps
(tol = 0), in one run; the results must agree. Target: batched >= 10x faster.

Both sides do the same arithmetic (4 matmuls of Tq x T x Dh per head and step), so
the gain is the per-call overhead of small problems; it depends on the thread count
and on what else the machine is running (the load average is printed).
Run: ``python benchmarks/bench_utility.py [n_docs] [steps] [threads]`` (defaults 24, 20,
torch's).
"""

from __future__ import annotations

import os
import sys
import time

import torch

from bench_retrieval import smollm2_example
from ropedim.hooks import capture
from ropedim.utility import UtilityConfig, utility_scores, utility_scores_loop


def main(n_docs: int = 24, steps: int = 20) -> None:
    lo, ids, ctx, q_pos = smollm2_example(n_docs)
    with torch.no_grad(), capture(lo.model, positions=q_pos, keep=("q", "k", "v")) as cap:
        lo.model(ids, use_cache=False)
    cfg = UtilityConfig(max_steps=steps, tol=0.0)
    times = {}
    for name, fn in (("batched", utility_scores), ("per-head loop", utility_scores_loop)):
        t0 = time.perf_counter()
        times[name] = (fn([cap], cfg), time.perf_counter() - t0)
    (a, ta), (b, tb) = times["batched"], times["per-head loop"]
    torch.testing.assert_close(a.u, b.u, atol=1e-4, rtol=0)
    L, H, Dh = a.u.shape
    print(f"SmolLM2-135M, T={ids.shape[1]} tokens, {len(q_pos)} question+output queries, "
          f"{L}x{H} heads of {Dh} dims, {steps} steps, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"max |u_batched - u_loop| = {(a.u - b.u).abs().max():.2e}")
    print(f"per-head loop: {tb:.1f} s   batched: {ta:.1f} s   ratio {tb / ta:.1f}x")


if __name__ == "__main__":
    if len(sys.argv) > 3:
        torch.set_num_threads(int(sys.argv[3]))
    main(*(int(x) for x in sys.argv[1:3]))
