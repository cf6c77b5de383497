"""Where a §5 QA run's time goes, per model, and how big a default-profile run fits an hour.

The §5 run of one model on one task has four kinds of work (``ropedim.qa.study``):
answers (a prefill per prompt, then a decode step per new token; the masked sweeps), the
captures of q, K, V over the analysis examples (one forward pass each, per Eq. 4 reading),
and Eq. 4's optimisation (steps × examples). This script measures the unit cost of each
on the models named, side by side in one process (each unit timed ``--reps`` times,
alternating models, the minimum kept: robust to other jobs on a shared CPU), and prints
each model's cost relative to the reference model (the first one).

The projection: a reference run's measured stage times (a cold default-profile run of the
reference model, ``REFERENCE`` below, with its source) scaled stage by stage by those
ratios; answers and captures scale with the number of questions, Eq. 4 with the analysis
questions. It prints the projected wall time of the default profile and of smaller sizes,
and the largest that fits ``--budget`` minutes. Run::

    PYTHONPATH=. python benchmarks/bench_qa_stages.py --models smollm2 qwen2.5-1.5b --task synthetic

It is a projection, not a run: the README says which sizes were then run and how long they took.
"""

from __future__ import annotations

import argparse
import time

import torch

# Stage seconds of the reference run: smollm2, synthetic task, default profile (n = 30
# questions, n_analysis = 12, 4 readings of Eq. 4), cold cache, CI's command alone on the
# 2-core development machine, 2026-12-02: the summary lines its progress printed (README,
# "the test command's measured time": claims ~32 min of the 47.5 min cold run).
REFERENCE = {
    "model": "smollm2", "task": "synthetic", "n": 30, "n_analysis": 12,
    "answers_s": 49.2 + 148.6 + 70.5 + 252.5 + 505.4 + 113.7 + 222.4,  # every sweep, fast and faithful
    "captures_s": 38.2 + 30.9 + 31.2 + 28.9,  # 4 readings × 36 examples
    "eq4_s": 288.8 + 183.3 + 128.4 + 273.2,  # 4 readings, 1358 Adam steps in all
}


def _best(fn, reps: int) -> float:
    out = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def unit_costs(loaded, task: str, reps: int, new_tokens: int = 16, eq4_steps: int = 5) -> dict[str, float]:
    """Seconds of one prefill, one decode step, one capture and one Eq. 4 step over one
    example, on a default-profile prompt of ``task`` (middle gold position)."""
    from ropedim.profiles import get
    from ropedim.prompts import encode
    from ropedim.qa.analysis import capture_example
    from ropedim.qa.dataset import build_qaset
    from ropedim.utility import PRIMARY, READINGS, RoPE, UtilityConfig, prepare, query_rows, utility_scores

    cfg = get("default").qa_config(task)
    qs = build_qaset(cfg, loaded)
    prompt = qs.kept_prompts(qs.positions[1])[0]
    ids, q_start = encode(prompt, loaded.tokenizer)
    x = torch.tensor([ids])
    model = loaded.model

    def prefill():
        with torch.no_grad():
            return model(input_ids=x, use_cache=True, logits_to_keep=1)

    def decode():
        with torch.no_grad():
            out = prefill()
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(new_tokens):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

    t_prefill = _best(prefill, reps)
    t_decode = max(_best(decode, reps) - t_prefill, 0.0) / new_tokens
    t_capture = _best(lambda: capture_example(loaded, prompt, "x"), reps)
    reading = READINGS[PRIMARY]
    ucfg = UtilityConfig(max_steps=eq4_steps, patience=10 ** 6)  # no early stop: a fixed number of steps
    ex = capture_example(loaded, prompt, "x")
    rows, w = query_rows(reading, ex.question_start, ex.ids.shape[1], seed=0)
    prepared = prepare((dict(ex.capture), rows), ucfg, w, RoPE.of(loaded.anatomy))
    t_eq4 = _best(lambda: utility_scores([prepared], ucfg, reading.reduce), reps) / eq4_steps
    return {"tokens": len(ids), "prefill_s": t_prefill, "decode_token_s": t_decode, "capture_s": t_capture,
            "eq4_step_example_s": t_eq4}


def project(ratio: dict[str, float], n: int, n_analysis: int, ref: dict = REFERENCE) -> dict[str, float]:
    """Minutes of each stage for a run of ``n`` questions and ``n_analysis`` analysis
    questions, from the reference run's stages scaled by the unit-cost ratios."""
    a = ref["answers_s"] * ratio["answers"] * n / ref["n"]
    c = ref["captures_s"] * ratio["capture_s"] * n_analysis / ref["n_analysis"]
    e = ref["eq4_s"] * ratio["eq4_step_example_s"] * n_analysis / ref["n_analysis"]
    return {"answers": a / 60, "captures": c / 60, "eq4": e / 60, "total": (a + c + e) / 60}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "qwen2.5-1.5b"],
                    help="aliases; the first is the reference (default: smollm2 qwen2.5-1.5b)")
    ap.add_argument("--task", choices=("synthetic", "nq"), default="synthetic")
    ap.add_argument("--reps", type=int, default=3, help="timings per unit, the minimum kept (default: 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, as the test run)")
    ap.add_argument("--answer-tokens", type=float, default=8.0,
                    help="mean new tokens per answer, to weigh decode against prefill (default: 8)")
    ap.add_argument("--budget", type=float, default=60.0, help="minutes (default: 60)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ropedim.models import load_cached

    if args.models[0] != REFERENCE["model"] or args.task != REFERENCE["task"]:
        raise SystemExit(f"the projection's reference run is {REFERENCE['model']} on {REFERENCE['task']}: "
                         f"name it first (--models {REFERENCE['model']} ...) with --task {REFERENCE['task']}")
    costs = {}
    for name in args.models:
        t = time.perf_counter()
        loaded = load_cached(name)
        print(f"{name}: loaded in {time.perf_counter() - t:.0f} s", flush=True)
        costs[name] = unit_costs(loaded, args.task, args.reps)
        del loaded
    ref = costs[args.models[0]]
    print(f"\nunit costs ({args.threads} threads, min of {args.reps}); ratio to {args.models[0]}")
    for name, c in costs.items():
        print(f"  {name:14s} " + "  ".join(f"{k} {v:.4g} (×{v / ref[k]:.2f})" for k, v in c.items()))
    m = args.answer_tokens
    for name in args.models[1:]:
        c = costs[name]
        ratio = {k: c[k] / ref[k] for k in c}
        ratio["answers"] = (c["prefill_s"] + m * c["decode_token_s"]) / (ref["prefill_s"] + m * ref["decode_token_s"])
        print(f"\n{name}: projected minutes of the default profile's §5 run on {args.task} "
              f"(answers ×{ratio['answers']:.1f}, captures ×{ratio['capture_s']:.1f}, "
              f"Eq. 4 ×{ratio['eq4_step_example_s']:.1f} the reference's)")
        fits = None
        for n, na in [(30, 12), (24, 12), (20, 8), (15, 6), (12, 4), (9, 3)]:
            p = project(ratio, n, na)
            ok = p["total"] <= args.budget
            fits = fits or ((n, na) if ok else None)
            print(f"  n={n:3d} n_analysis={na:3d}: answers {p['answers']:6.1f}  captures {p['captures']:5.1f}  "
                  f"Eq. 4 {p['eq4']:6.1f}  total {p['total']:6.1f} {'✓' if ok else ''}")
        print(f"  largest that fits {args.budget:.0f} min: " + (f"n={fits[0]}, n_analysis={fits[1]}" if fits else "none"))


if __name__ == "__main__":
    main()
