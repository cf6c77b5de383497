"""Throughput on whatever device this process gets (``ropedim.devices``: a GPU where CUDA
exists, in bfloat16; else the CPU, in float32) at the paper's prompt length, and what it
means for ``pytest claims --model M --profile paper``. Prints:

- answers/s for plain greedy generation, the faithful masked sweep (the paper's mode) and
  the fast sweep, on NQ-open prompts of ``--k`` documents (default 20, ~2700 tokens; the
  synthetic task where the NQ file is absent), 5 mask variants as in bench_generation.py;
- the prefill's achieved FLOP/s (2 × non-embedding parameters per token plus causal
  attention) against the device's dense bf16 peak (datasheet table below; a CPU: a
  measured matrix product, not a datasheet number);
- the projected wall time of the paper profile's QA claims for the loaded model: its answer
  counts over these rates, plus the analysis captures and Eq. 4, per task and in total, for
  1, 4 and 8 GPUs (one xdist worker each, batches split between them).

Run (from the repository root)::

    python benchmarks/bench_gpu.py --model qwen                    # a GPU, the paper's model
    PYTHONPATH=. python benchmarks/bench_gpu.py --model smollm2 --n 1 --k 5 --max-new-tokens 8   # a quick CPU run
"""

from __future__ import annotations

import argparse
import time

import torch

# dense bfloat16 tensor-core peaks, TFLOP/s (vendor datasheets, without sparsity); the
# first name contained in torch.cuda.get_device_name() wins, so longer names come first
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("RTX A6000", 154.8), ("L40S", 362.0), ("L40", 181.0),
    ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device, fn):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """(FLOP/s, where the number comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS:
            if key in name:
                return tflops * 1e12, f"{name}: datasheet dense bf16 peak"
        return None, f"{name}: peak unknown (add it to PEAK_BF16_TFLOPS)"
    a = torch.randn(2048, 2048, dtype=dtype, device=device)
    a @ a
    _, t = _timed(device, lambda: [a @ a for _ in range(3)])
    return 3 * 2 * 2048 ** 3 / t, f"CPU, {torch.get_num_threads()} threads: a measured {dtype} matmul, no datasheet"


def _flops(x: float) -> str:
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def prefill_flops(model, lengths: list[int]) -> float:
    """Useful FLOPs of a forward pass over sequences of ``lengths`` tokens that keeps the
    last token's logits: 2 per weight per token (the embedding lookup and the output head
    aside: the head runs once per sequence) plus causal attention (QK^T and PV)."""
    from ropedim.anatomy import anatomy_of

    a = anatomy_of(model)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - emb.numel() - (0 if head is emb else head.numel())
    attn = sum(2 * a.n_layers * a.n_heads * a.head_dim * t * t for t in lengths)
    return 2 * body * sum(lengths) + 2 * head.numel() * len(lengths) + attn


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="ropedim.models alias, HF id or local dir (default: smollm2)")
    ap.add_argument("--n", type=int, default=8, help="questions per gold position (default: 8)")
    ap.add_argument("--k", type=int, default=20, help="documents per prompt (default: 20, the paper's)")
    ap.add_argument("--task", choices=("nq", "synthetic"), default="nq",
                    help="NQ-open with random distractors (default; synthetic if the NQ file is absent)")
    ap.add_argument("--max-new-tokens", type=int, default=24, help="default: 24 (the paper profile's)")
    ap.add_argument("--batch-size", type=int, default=4,
                    help="batch on a CPU (default: 4, the paper profile's); a GPU plans its own (ropedim.memory)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from claims.table import qa_masks
    from ropedim import memory, profiles
    from ropedim.generation import generate, sweep
    from ropedim.models import load_cached
    from ropedim.prompts import build_prompts, tokenize_prompt
    from ropedim.qa.masks import theta_end_mask
    from ropedim.qa_data import build_k_doc, load_oracle, synthetic_task

    lm, t_load = _timed(torch.device("cpu"), lambda: load_cached(args.model))
    model, tok, a, dev = lm.model, lm.tokenizer, lm.anatomy, lm.device
    dtype = next(model.parameters()).dtype
    print(f"{args.model} on {dev} in {dtype}, loaded in {t_load:.1f} s")

    positions = (0, (args.k - 1) // 2, args.k - 1)
    task = args.task
    if task == "nq":
        try:
            oracle = load_oracle()
        except FileNotFoundError as e:
            print(f"NQ file absent ({e}); using the synthetic task (shorter prompts)")
            task = "synthetic"
    make = ((lambda pos: build_k_doc(oracle, args.k, pos, "random", n=args.n)) if task == "nq"
            else (lambda pos: synthetic_task(args.n, args.k, pos)))
    prompts = [p for pos in positions for p in build_prompts(make(pos), lm.prompt_style, tok)]
    lengths = [len(tokenize_prompt(p, tok).input_ids) for p in prompts]
    g = torch.Generator().manual_seed(0)
    heads = [(la, h) for la in range(a.n_layers) for h in range(a.n_heads) if torch.rand(1, generator=g).item() < 0.25]
    k8 = a.head_dim // 8
    variants = {"none": None, **{f"{w}{kk}": theta_end_mask(a, w, kk, heads) for w in ("first", "last") for kk in (k8, 2 * k8)}}
    print(f"{task}, {args.k} documents: {len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens "
          f"(mean {sum(lengths) / len(lengths):.0f}); {len(variants)} variants; up to {args.max_new_tokens} new tokens")
    if dev.type == "cuda":
        rows = memory.generation_batch(model, args.batch_size, lambda: max(lengths), args.max_new_tokens)
        print(f"memory plan: {rows} prompts per generation batch ({memory.HEADROOM:.0%} headroom)")

    generate(lm, tok, prompts[:1], 2, batch_size=1, cache=False)  # warm-up (CUDA context, kernels)
    run = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, cache=False)
    rates = {}
    _, t = _timed(dev, lambda: generate(lm, tok, prompts, **run))
    rates["plain greedy"] = len(prompts) / t
    _, t = _timed(dev, lambda: sweep(lm, tok, prompts, variants, "faithful", **run))
    rates["faithful masked sweep"] = len(prompts) * len(variants) / t
    _, t = _timed(dev, lambda: sweep(lm, tok, prompts, variants, "fast", **run))
    rates["fast sweep"] = len(prompts) * len(variants) / t
    for name, r in rates.items():
        print(f"{name:24s} {r:8.2f} answers/s")

    # prefill: one forward over a batch of the prompts, the last token's logits only
    from ropedim.decode import left_pad, pad_id
    batch = prompts[: max(1, min(len(prompts), memory.generation_batch(model, args.batch_size, lambda: max(lengths), 1)))]
    ids, mask = left_pad([tokenize_prompt(p, tok).input_ids for p in batch], pad_id(tok), dev)
    with torch.inference_mode():
        fwd = lambda: model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        fwd()
        _, t = _timed(dev, fwd)
    achieved = prefill_flops(model, mask.sum(-1).tolist()) / t
    peak, source = peak_flops(dev, dtype)
    share = f"{100 * achieved / peak:.0f}% of {_flops(peak)} ({source})" if peak else source
    print(f"prefill: {len(batch)} x {ids.shape[1]} tokens in {t:.3f} s: {_flops(achieved)}, {share}")
    if args.k != 20:
        print(f"(prompts of {args.k} documents: the projection below uses these rates for the paper's 20)")

    project(lm, prompts, variants, rates, profiles.get("paper"), qa_masks())


def project(lm, prompts, variants, rates, profile, masks) -> None:
    """The paper profile's QA work over the measured rates (answers at this prompt length)."""
    from ropedim.qa.analysis import capture_example
    from ropedim.retrieval import retrieval_scores
    from ropedim.utility import UtilityConfig, prepare, utility_scores

    dev = lm.device
    exs, t_cap = _timed(dev, lambda: [capture_example(lm, p, "answer") for p in prompts[:2]])
    prepared, t_prep = _timed(dev, lambda: [prepare(dict(e.capture)) for e in exs])
    for e in exs:
        retrieval_scores(e.capture, None, e.context)
    steps = 5
    _, t_u = _timed(dev, lambda: utility_scores(prepared, UtilityConfig(max_steps=steps, tol=0.0)))
    per_capture, per_step_example = (t_cap + t_prep) / len(exs), t_u / steps / len(prepared)
    n_var = len(masks) + 1
    print(f"\nprojected: `pytest claims --model {lm.name} --profile paper` (QA claims; measured rates at this prompt "
          f"length, {n_var} mask variants, faithful mode, fast mode for the mode check)")
    total = 0.0
    for task, spec in profile.qa.items():
        cfg = profile.qa_config(task)
        n_pos = len(cfg.positions)
        answers = cfg.n * n_pos * n_var
        fast = cfg.n_mode_check * n_pos * (n_var - 1)
        cap = cfg.n_analysis * per_capture
        eq4 = cfg.n_analysis * per_step_example * UtilityConfig().max_steps  # every head to max_steps: an upper bound
        t = answers / rates["faithful masked sweep"] + fast / rates["fast sweep"] + cap + eq4
        total += t
        print(f"  {task:9s}: {answers} faithful + {fast} fast answers, {cfg.n_analysis} captures, Eq. 4 "
              f"<= {UtilityConfig().max_steps} steps: {t / 3600:.2f} h")
    for gpus in (1, 4, 8) if dev.type == "cuda" else (1,):
        print(f"  total on {gpus} device(s) like this one (-n {gpus}): {total / gpus / 3600:.2f} h")


if __name__ == "__main__":
    main()
