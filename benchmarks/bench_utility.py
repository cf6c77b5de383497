"""Utility scores (§5.2, Eq. 4) on SmolLM2-135M-Instruct: all 270 heads optimised as one
batched problem (``ropedim.utility.utility_scores``) against the straightforward way, a
loop over heads with autograd and ``torch.optim.Adam``, the same objective, steps and
clamp to [0, 1] (tol = 0: every head takes every step), in one run; the scores must agree.
Target: batched >= 10x faster. Also times ``utility_scores_loop`` (our kernel, one head at
a time), which isolates what batching alone buys.

Run: ``python benchmarks/bench_utility.py [n_docs] [steps] [threads]`` (defaults 24, 20, 1).
"""

from __future__ import annotations

import os
import sys
import time

import torch

from bench_retrieval import smollm2_example
from ropedim.attention import attention
from ropedim.capture import in_layer_order
from ropedim.utility import UtilityConfig, utility_scores, utility_scores_loop


def plain(cap, q_pos: torch.Tensor, cfg: UtilityConfig) -> torch.Tensor:
    """Eq. 4 head by head: autograd through the attention, torch.optim.Adam, clamp."""
    out = []
    for c in in_layer_order(cap):
        q, k, v, scale, window = c.q, c.k, c.v, c.scaling, c.window
        g = q.shape[1] // k.shape[1]
        row = []
        for h in range(q.shape[1]):
            qh, kh, vh = q[:, h:h + 1].float(), k[:, h // g:h // g + 1].float(), v[:, h // g:h // g + 1].float()
            target = attention(qh, kh, vh, scale, q_pos, window)
            n_q = q_pos.numel() * q.shape[0]
            u = torch.ones(q.shape[-1], requires_grad=True)
            opt = torch.optim.Adam([u], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
            for _ in range(cfg.max_steps):
                opt.zero_grad()
                err = (attention(qh * u, kh, vh, scale, q_pos, window) - target).pow(2).sum() / n_q
                (err + u.sum() / q.shape[-1]).backward()  # α = 1/Dh; u >= 0 so ‖u‖₁ = Σu
                opt.step()
                with torch.no_grad():
                    u.clamp_(0.0, 1.0)
            row.append(u.detach())
        out.append(torch.stack(row))
    return torch.stack(out)


def main(n_docs: int = 24, steps: int = 20) -> None:
    lo, _, _, ex = smollm2_example(n_docs)  # the pipeline's capture of prompt + own answer
    cap, ids = ex.capture, ex.ids
    q_pos = torch.arange(ex.question_start, ids.shape[1])
    cfg = UtilityConfig(max_steps=steps, tol=0.0)
    t0 = time.perf_counter()
    ours = utility_scores([cap], cfg).u
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = utility_scores_loop([cap], cfg).u
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = plain(cap, q_pos, cfg)
    t_plain = time.perf_counter() - t0
    L, H, Dh = ours.shape
    print(f"SmolLM2-135M, T={ids.shape[1]} tokens, {len(q_pos)} question+output queries, "
          f"{L}x{H} heads of {Dh} dims, {steps} steps, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"max |u - u_plain| = {(ours - ref).abs().max():.2e}, max |u - u_loop| = {(ours - loop).abs().max():.2e}")
    print(f"plain per-head autograd loop: {t_plain:6.1f} s  ({t_plain / (L * H):.3f} s/head)")
    print(f"our kernel, head by head:     {t_loop:6.1f} s")
    print(f"ours, all heads batched:      {t_ours:6.1f} s")
    print(f"ratio plain / batched: {t_plain / t_ours:.1f}x   (loop / batched: {t_loop / t_ours:.1f}x)")
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=0)


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    main(*(int(x) for x in sys.argv[1:3]))
