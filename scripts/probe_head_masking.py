"""Exploratory probe for issue 19 §1, now the check B-heads (ropedim/head_ablation.py; same specs, so its cache entries are shared):
the top-k heads by the paper's retrieval score (§5.3) against k random heads drawn from the same layers
(5 seeded draws), each set masked in every position, on the gold answer's teacher-forced log-prob of the
first 10 synthetic questions at every gold position (smollm2, default profile), paired per question.

    OMP_NUM_THREADS=1 python scripts/probe_head_masking.py 14 zero      # k heads, form: zero | uniform

Forms: "zero" sets the head's attention output to 0 (a post hook); "uniform" zeroes the head's query,
which makes its attention uniform over the causal keys (Wu et al.'s form). The paper's own set (score >
0.5) has no same-layer random control on smollm2: it holds every head of several layers."""
import sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from contextlib import contextmanager
import numpy as np, torch
from ropedim.models import load_cached
from ropedim.profiles import PROFILES
from ropedim.qa.study import Study
from ropedim.hooks import routed, _hooked
from ropedim.logprob import Intervention
from ropedim import stats
from claims.table import qa_plan

FORM = sys.argv[2] if len(sys.argv) > 2 else "zero"

def uniform_heads(name, heads):
    from ropedim.anatomy import mask_shape
    def enter(model):
        m = torch.ones(mask_shape(model))
        for l, h in heads: m[l, h] = 0  # a zero query: uniform attention over the causal keys
        from ropedim.hooks import masked
        return masked(model, m)
    return Intervention(name, {"kind": "uniform-heads", "heads": [list(x) for x in sorted(heads)]}, enter)

def zero_heads(name, heads):
    if FORM == "uniform":
        return uniform_heads(name, heads)
    heads = sorted(heads)
    @contextmanager
    def enter(model):
        by = {}
        for l, h in heads: by.setdefault(l, []).append(h)
        def mk(hs):
            def post(mod, out, kw):
                out[:, :, hs] = 0
            return post
        with routed(model) as attns, _hooked(attns, "_ropedim_post", {l: mk(hs) for l, hs in by.items()}):
            yield
    return Intervention(name, {"kind": "zero-heads-output", "heads": [list(x) for x in heads]}, enter)

s = Study(load_cached("smollm2"), PROFILES["default"].qa_config("synthetic", None), qa_plan())
sc = s.head_scores().retrieval  # [L, H]
L, H = sc.shape
k = int(sys.argv[1]) if len(sys.argv) > 1 else 14
draws = 5
flat = torch.argsort(sc.flatten(), descending=True)[:k]
top = [(int(i) // H, int(i) % H) for i in flat]
topset = set(top)
g = np.random.default_rng(0)
ivs = [zero_heads(f"top{k}", top)]
for d in range(draws):
    rnd = []
    for l in sorted({l for l, _ in top}):
        n = sum(1 for x in top if x[0] == l)
        pool = [h for h in range(H) if (l, h) not in topset]
        if len(pool) < n: raise SystemExit(f"layer {l}: {n} top heads, {len(pool)} others")
        rnd += [(l, int(h)) for h in g.choice(pool, n, replace=False)]
    ivs.append(zero_heads(f"random{k}-{d}", rnd))
t = time.time()
lp = s.gold_logprob(ivs, 10)
rand = np.mean([lp[f"random{k}-{d}"] for d in range(draws)], 0)
per_q = (lp[f"top{k}"] - rand).mean(0)
e = stats.mean_ci(per_q, seed=0)
print(f"form={FORM} k={k} top heads {top}; layers {sorted({l for l,_ in top})}")
print(f"top - random (nats, per question, mean over positions): {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]; "
      f"top - none {float((lp[f'top{k}'] - lp['none']).mean()):.3f}; random - none {float((rand - lp['none']).mean()):.3f}; "
      f"per-draw random - none {[round(float((lp[f'random{k}-{d}'] - lp['none']).mean()), 3) for d in range(draws)]}; {time.time()-t:.0f}s")
