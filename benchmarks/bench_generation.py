"""Masked sweep, fast mode vs a plain loop of ``model.generate`` (one call per example and
variant), on the same prompts: 5 mask variants x 3 gold positions (1st, middle, last).

Both mask the query from the question start on (the plain loop with ``from_position``).
Fast mode prefills the contexts along their prefix tree (each shared prefix once: the
instruction, the documents before the gold one), then decodes all variants of a context
together, reading its keys and values once (``ropedim.shared_prefix``). Prints answers per
second, the ratio and how often the two give the same first line. Run::

    PYTHONPATH=. python benchmarks/bench_generation.py --model smollm2 --n 8 --k 20

On a CPU shared with other jobs, ``--threads 1`` (the default) is much faster than 2.

``--kernels`` times the fast sweep instead with its portable shared-context kernel
(``ropedim.attention.sdpa_with_lse``, CPU and CUDA) and with the CPU-only fused kernel it
replaced (``cpu_flash_sdpa_with_lse``), on the same prompts, and prints the ratio.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="ropedim.models alias (default: smollm2)")
    ap.add_argument("--n", type=int, default=8, help="questions per position (default: 8)")
    ap.add_argument("--task", choices=("synthetic", "nq"), default="synthetic",
                    help="the project's synthetic task or NQ-open with random distractors (default: synthetic)")
    ap.add_argument("--k", type=int, default=20, help="documents per question (default: 20, the paper's)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="default: 32")
    ap.add_argument("--batch-size", type=int, default=24, help="fast mode batch (default: 24)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--head-fraction", type=float, default=0.25,
                    help="fraction of heads masked, at random (default: 0.25)")
    ap.add_argument("--faithful", action="store_true", help="also time faithful mode")
    ap.add_argument("--kernels", action="store_true",
                    help="compare the fast sweep's shared-context kernels (portable vs the old CPU-only one) "
                         "instead of fast vs the plain loop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ropedim.generation import sweep
    from ropedim.hooks import masked
    from ropedim.qa.masks import theta_end_mask
    from ropedim.metrics import first_line
    from ropedim.models import load_cached
    from ropedim.prompts import build_prompts, tokenize_prompt
    from ropedim.qa_data import build_k_doc, load_oracle, synthetic_task

    t0 = time.perf_counter()
    lm = load_cached(args.model)
    model, tok, a = lm.model, lm.tokenizer, lm.anatomy
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s")
    # a stand-in for the retrieval heads (score > 0.5) whose dims §5.4 masks: 1 head in 4
    g = torch.Generator().manual_seed(0)
    heads = [(layer, h) for layer in range(a.n_layers) for h in range(a.n_heads)
             if torch.rand(1, generator=g).item() < args.head_fraction]
    k8 = a.head_dim // 8  # the paper's 16 of 128 dimensions, scaled to this head size
    variants = {"none": None}
    for which in ("first", "last"):
        for kk in (k8, 2 * k8):
            variants[f"{which}{kk}"] = theta_end_mask(a, which, kk, heads)
    positions = (0, (args.k - 1) // 2, args.k - 1)
    examples = ((lambda pos: synthetic_task(args.n, args.k, pos)) if args.task == "synthetic" else
                (lambda pos: build_k_doc(load_oracle(), args.k, pos, "random", n=args.n)))
    prompts = [p for pos in positions for p in build_prompts(examples(pos), lm.prompt_style, tok)]
    n_gen = len(prompts) * len(variants)
    print(f"{len(prompts)} prompts x {len(variants)} variants = {n_gen} answers; "
          f"mean prompt {sum(len(tokenize_prompt(p, tok).input_ids) for p in prompts) / len(prompts):.0f} tokens")

    def run_fast(clock=time.perf_counter):
        t0 = clock()
        out = sweep(lm, tok, prompts, variants, mode="fast", max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size, cache=False)
        return out, clock() - t0

    if args.kernels:
        return _compare_kernels(run_fast, n_gen)
    fast, t_fast = run_fast()

    t0 = time.perf_counter()
    loop = {name: [] for name in variants}
    for p in prompts:
        enc = tokenize_prompt(p, tok)
        ids = torch.tensor([enc.input_ids])
        for name, m in variants.items():
            ctx = masked(model, m, from_position=enc.question_start) if m is not None else nullcontext()
            with ctx, torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=args.max_new_tokens,
                                     stopping_criteria=[_FirstLine(tok, ids.shape[1])],
                                     pad_token_id=tok.pad_token_id or tok.eos_token_id)
            loop[name].append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    t_loop = time.perf_counter() - t0

    same = sum(first_line(x) == first_line(y) for v in variants for x, y in zip(fast[v], loop[v]))
    print(f"plain loop: {t_loop:7.1f} s  {n_gen / t_loop:6.2f} answers/s")
    print(f"fast sweep: {t_fast:7.1f} s  {n_gen / t_fast:6.2f} answers/s")
    if args.faithful:
        t0 = time.perf_counter()
        sweep(lm, tok, prompts, variants, mode="faithful", max_new_tokens=args.max_new_tokens,
              batch_size=8, cache=False)
        t_f = time.perf_counter() - t0
        print(f"faithful:   {t_f:7.1f} s  {n_gen / t_f:6.2f} answers/s")
    print(f"same first line: {same}/{n_gen}")
    print(f"ratio plain loop / fast: {t_loop / t_fast:.1f}x")


def _compare_kernels(run_fast, n_gen: int) -> None:
    """The two kernels in the order portable, old, old, portable (a load that drifts
    during the run weighs on both alike); the times are the sums of two runs each, in CPU
    seconds of this process (on a CPU shared with other jobs wall time mostly measures them)."""
    from unittest import mock

    from ropedim import shared_prefix
    from ropedim.attention import cpu_flash_sdpa_with_lse

    def old():
        with mock.patch.object(shared_prefix, "sdpa_with_lse", cpu_flash_sdpa_with_lse):
            return run_fast(time.process_time)

    (a, t1), (b, t2), (_, t3), (_, t4) = run_fast(time.process_time), old(), old(), run_fast(time.process_time)
    t_new, t_old = t1 + t4, t2 + t3
    same = sum(x == y for v in a for x, y in zip(a[v], b[v]))
    print(f"fast sweep, portable kernel:     {t1:6.1f} + {t4:6.1f} CPU s  {2 * n_gen / t_new:6.2f} answers per CPU s")
    print(f"fast sweep, old CPU-only kernel: {t2:6.1f} + {t3:6.1f} CPU s  {2 * n_gen / t_old:6.2f} answers per CPU s")
    print(f"same answers: {same}/{n_gen}")
    print(f"ratio old / portable: {t_old / t_new:.2f}x")


def _FirstLine(tok, n0):
    """Stop at a newline once some text was generated (ropedim.generation's rule)."""
    from transformers import StoppingCriteria

    class FirstLine(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            text = tok.decode(input_ids[0, n0:], skip_special_tokens=True)
            return torch.tensor(["\n" in text.lstrip()])

    return FirstLine()


if __name__ == "__main__":
    main()
