"""Retrieval-head scores (§5.3) on SmolLM2-135M-Instruct at ~3000 tokens: ours (an sdpa
forward capturing q at the question+output rows and K, then ``retrieval_scores``) against
the plain way (an eager forward with ``output_attentions=True``, summing the same rows),
in one run; the scores must agree. Target: ours >= 3x faster as a separate pass.

The plain pass is the model's eager attention, which computes every T x T map (what
``output_attentions=True`` returns); to keep memory bounded (30 layers x 9 heads x T^2
floats is ~10 GB) a forward hook on each attention module reduces its map to the score
instead of collecting all of them.
Run: ``python benchmarks/bench_retrieval.py [n_docs] [threads]`` (defaults 24, torch's).
"""

from __future__ import annotations

import os
import sys
import time

import torch

from ropedim.anatomy import attention_modules
from ropedim.hooks import capture
from ropedim.models import load_cached
from ropedim.prompts import build_prompt, tokenize_prompt
from ropedim.qa_data import build_k_doc, load_oracle
from ropedim.retrieval import retrieval_scores


def smollm2_example(n_docs: int = 24, new_tokens: int = 16):
    """SmolLM2, token ids of a QA prompt with ``n_docs`` documents plus the model's own
    greedy answer, the context span and the question+output positions."""
    lo = load_cached("smollm2")
    ex = build_k_doc(load_oracle(), k=n_docs, gold_position=n_docs // 2, distractors="random", n=1)[0]
    tp = tokenize_prompt(build_prompt(ex, lo.prompt_style, lo.tokenizer), lo.tokenizer)
    ids = torch.tensor([tp.input_ids])
    with torch.no_grad():
        ids = lo.model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    return lo, ids, tp.context, torch.arange(tp.question_start, ids.shape[1])


def ours(model, ids, ctx, q_pos):
    with torch.no_grad(), capture(model, positions=q_pos, keep=("q", "k")) as cap:
        model(ids, use_cache=False, logits_to_keep=1)  # no logits needed, nor below
    return retrieval_scores(cap, q_pos, ctx, bos_index=0)


def plain(model, ids, ctx, q_pos):
    """Eager forward; each layer's [B, H, T, T] map (as output_attentions gives it) -> [H]."""
    rows = []

    def reduce(mod, args, out):
        w = out[1][:, :, q_pos].float()  # [B, H, Tq, T]
        bos = w[..., 0] if ctx[0] <= 0 < ctx[1] else 0.0  # BOS weight left out of the sum
        rows.append((w[..., ctx[0]:ctx[1]].sum(-1) - bos).mean((0, 2)))

    model.set_attn_implementation("eager")
    hooks = [a.register_forward_hook(reduce) for a in attention_modules(model)]
    try:
        with torch.no_grad():
            model(ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
        model.set_attn_implementation("sdpa")
    return torch.stack(rows)  # [L, H]


def timed(fn, *args, reps: int = 1):
    fn(*args)  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    return out, (time.perf_counter() - t0) / reps


def main(n_docs: int = 24) -> None:
    lo, ids, ctx, q_pos = smollm2_example(n_docs)
    model = lo.model
    a, t_ours = timed(ours, model, ids, ctx, q_pos)
    b, t_plain = timed(plain, model, ids, ctx, q_pos)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    with torch.no_grad(), capture(model, positions=q_pos, keep=("q", "k")) as cap:
        model(ids, use_cache=False)
    _, t_scores = timed(retrieval_scores, cap, q_pos, ctx, 0)
    print(f"SmolLM2-135M, T={ids.shape[1]} tokens, {len(q_pos)} question+output queries, "
          f"context {ctx}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print(f"max |ours - plain| = {(a - b).abs().max():.2e}; "
          f"{int((a > 0.5).sum())} heads with score > 0.5 of {a.numel()}")
    print(f"plain (eager, output_attentions): {t_plain:.2f} s")
    print(f"ours (capture forward + scores):  {t_ours:.2f} s   -> {t_plain / t_ours:.1f}x")
    print(f"ours, scores from a capture made anyway: {t_scores:.3f} s -> {t_plain / t_scores:.0f}x")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        torch.set_num_threads(int(sys.argv[2]))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
