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
from ropedim.generation import generate
from ropedim.models import load_cached
from ropedim.prompts import build_prompt
from ropedim.qa.analysis import capture_example
from ropedim.qa_data import build_k_doc, load_oracle
from ropedim.retrieval import retrieval_scores


def smollm2_example(n_docs: int = 24, new_tokens: int = 16):
    """SmolLM2 on a QA prompt with ``n_docs`` documents and its own greedy answer, captured
    as the pipeline does (``ropedim.qa.analysis.capture_example``): the loaded model, the
    prompt, the answer and the example (ids, context span, question start, capture)."""
    lo = load_cached("smollm2")
    ex = build_k_doc(load_oracle(), k=n_docs, gold_position=n_docs // 2, distractors="random", n=1)[0]
    prompt = build_prompt(ex, lo.prompt_style, lo.tokenizer)
    answer = generate(lo, None, [prompt], new_tokens, cache=False)[0]
    return lo, prompt, answer, capture_example(lo, prompt, answer)


def ours(lo, prompt, answer):
    """The pipeline's step: capture forward over prompt + answer, then the scores."""
    ex = capture_example(lo, prompt, answer)
    return retrieval_scores(ex.capture, None, ex.context, bos_index=ex.bos_index)


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
    lo, prompt, answer, ex = smollm2_example(n_docs)
    model, ids, ctx = lo.model, ex.ids, ex.context
    q_pos = torch.arange(ex.question_start, ids.shape[1])
    a, t_ours = timed(ours, lo, prompt, answer)
    b, t_plain = timed(plain, model, ids, ctx, q_pos)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    _, t_scores = timed(retrieval_scores, ex.capture, None, ctx, ex.bos_index)
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
