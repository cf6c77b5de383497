"""§4, the controlled experiment (Eq. 3, App. A).

"We design a simple experiment where the model needs to learn n vector tuples
{(q_i, k_i, v_i)} such that the attention head can retrieve v_i with q_i from any randomly
sampled subset of key-value pairs." Loss: −log P(v_i | q_i, K, V) with
P(v_i | q_i) = exp(aᵀv_i) / Σ_j exp(aᵀv_j), a = Attention(q_i, K, V).

What the paper leaves open, and what we chose (the report repeats it):
- Positions. Every key gets its own position, uniform in [0, max_position); the query
  sits at position ``max_position`` (after all keys, as a question after its context).
  Only n − m matters (Eq. 2), so relative distances are uniform in [1, max_position].
- Subsets. K, V hold the target pair plus ``subset − 1`` others drawn without
  replacement from the remaining n − 1; the target's slot is random.
- Attention is one head, softmax(q·k / sqrt(d)) V, RoPE on q and k (LLaMA's θ, base
  10000) in the rope setup and none in the other; P(v_j) is taken over all n values.
- Vectors start N(0, 1); Adam at the paper's lr; targets drawn uniformly each step.

Speed: setups and seeds train together as one stacked batch of models, the rotation
uses a precomputed cos/sin table, and subsets for a whole epoch are drawn at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from . import cache
from .progress import progress as tracker
from .rope import inv_freq


@dataclass(frozen=True)
class ToyConfig:
    n: int = 1000  # tuples
    dim: int = 128  # hidden dims of the head (2D)
    subset: int = 128  # key-value pairs sampled into K, V
    max_position: int = 2048
    base: float = 10000.0
    lr: float = 1e-3
    batch: int = 64
    samples_per_epoch: int = 10000
    epochs: int = 100
    eval_samples: int = 2048
    removal_step: int = 8  # Fig. 1b x-axis step, in dims
    init_std: float = 1.0  # vectors start N(0, init_std²)

    def __post_init__(self):
        errors = []
        if self.n < 2:
            errors.append(f"n={self.n}: need at least 2 tuples")
        if self.dim < 2 or self.dim % 2:
            errors.append(f"dim={self.dim}: RoPE needs a positive even number of dims")
        if not 1 <= self.subset <= self.n:
            errors.append(f"subset={self.subset}: must be between 1 and n={self.n}")
        if self.max_position < 1:
            errors.append(f"max_position={self.max_position}: must be at least 1")
        for name in ("lr", "base", "init_std"):
            if not getattr(self, name) > 0:
                errors.append(f"{name}={getattr(self, name)}: must be positive")
        for name in ("batch", "samples_per_epoch", "epochs", "eval_samples", "removal_step"):
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)}: must be at least 1")
        if errors:
            raise ValueError("invalid toy config: " + "; ".join(errors))

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.samples_per_epoch / self.batch)

    def to_dict(self) -> dict:
        return asdict(self)


PAPER = ToyConfig()  # App. A
CODE_VERSION = 3  # bump when training or ToyRun changes, to invalidate cached runs


@cache.storable
@dataclass
class ToyRun:
    """What one trained model gives the claims: Fig. 1a and Fig. 1b statistics."""

    rope: bool
    seed: int
    q: torch.Tensor  # [n, dim], paper layout (pair r = dims 2r, 2r+1; θ rank r)
    k: torch.Tensor  # [n, dim]
    v: torch.Tensor  # [n, dim]
    removed: list[int]  # Fig. 1b x-axis: number of removed dims
    loss_first: torch.Tensor  # [len(removed), eval_samples]: per-sample loss, first dims removed
    loss_last: torch.Tensor  # [len(removed), eval_samples]
    train_loss: list[float]  # mean loss per epoch
    seconds: float
    init_std: float = 1.0  # vectors started N(0, init_std²)

    def loss_removed(self, which: str, k: int) -> torch.Tensor:
        """Per-sample loss with the first/last ``k`` dims removed; [eval_samples]."""
        if k not in self.removed:
            raise ValueError(f"no loss with {k} dims removed; measured for {self.removed} "
                             "(set removal_step to divide it)")
        table = self.loss_first if which == "first" else self.loss_last
        return table[self.removed.index(k)]


def _sample(gen, models, count, cfg):
    """Targets [M, count], subsets [M, count, S] containing the target, key positions."""
    target = torch.randint(cfg.n, (models, count), generator=gen)
    others = torch.rand(models, count, cfg.n, generator=gen)
    others.scatter_(-1, target[..., None], 2.0)  # never pick the target as "other"
    subset = others.topk(cfg.subset, dim=-1, largest=False).indices  # [M, count, S]
    slot = torch.randint(cfg.subset, (models, count, 1), generator=gen)
    subset.scatter_(-1, slot, target[..., None])
    pos = torch.randint(cfg.max_position, (models, count, cfg.subset), generator=gen)
    return target, subset, pos


class _Stack:
    """M toy heads trained together: setups × seeds stacked into one table per role.

    By Eq. 2, q_mᵀ M_{n−m} k_n: we rotate only the key, by its distance to the query
    (a complex product with a precomputed table), which gives LLaMA's scores exactly.
    """

    def __init__(self, cfg: ToyConfig, ropes: list[bool], seeds: list[int], compile: bool = True):
        self.cfg, self.m = cfg, len(seeds)
        self.rope = torch.tensor(ropes)
        self.offset = torch.arange(self.m) * cfg.n  # model m's rows in the flat tables
        init = [cfg.init_std * torch.randn(3, cfg.n, cfg.dim, generator=torch.Generator().manual_seed(s))
                for s in seeds]
        p = torch.cat(init, dim=1)  # [3, M·n, d]
        self.q, self.k, self.v = (t.clone().requires_grad_() for t in p)
        dist = torch.arange(cfg.max_position + 1, dtype=torch.float32)[:, None]
        angle = -dist * inv_freq(cfg.dim, cfg.base)  # key at distance Δ before the query
        self.cis = torch.polar(torch.ones_like(angle), angle)  # [P + 1, d/2]
        self._losses = self._eager
        if compile:
            try:
                self._losses = torch.compile(self._eager, dynamic=False)
            except Exception:  # no compiler: eager is correct, only slower
                pass

    def losses(self, target, subset, pos, keep=None):
        """Per-sample −log P(v_i | q_i, K, V); [M, B]. keep: [d] mask on q (Fig. 1b)."""
        keep = torch.ones(self.cfg.dim) if keep is None else keep
        return self._losses(target, subset, pos, keep)

    def _eager(self, target, subset, pos, keep):
        cfg, M = self.cfg, self.m
        dist = (cfg.max_position - pos) * self.rope[:, None, None]  # 0 for no-RoPE heads
        q = F.embedding(target + self.offset[:, None], self.q) * keep  # [M, B, d]
        rows = subset + self.offset[:, None, None]
        k = F.embedding(rows, self.k)  # [M, B, S, d]
        v = F.embedding(rows, self.v)  # [M, B, S, d]
        k = torch.view_as_real(torch.view_as_complex(k.unflatten(-1, (-1, 2))) * self.cis[dist]).flatten(-2)
        w = torch.softmax(torch.einsum("mbd,mbsd->mbs", q, k) / math.sqrt(cfg.dim), dim=-1)
        a = torch.einsum("mbs,mbsd->mbd", w, v)  # [M, B, d]
        logits = torch.einsum("mbd,mnd->mbn", a, self.v.view(M, cfg.n, cfg.dim))  # [M, B, n]
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)

    def table(self, name: str, m: int) -> torch.Tensor:
        return getattr(self, name)[m * self.cfg.n:(m + 1) * self.cfg.n].detach().clone()


def train(cfg: ToyConfig, ropes=(True, False), seeds=(0,), progress: bool = True,
          compile: bool = True) -> list[ToyRun]:
    """Train one head per (rope, seed) together; return them in (rope, seed) order.

    Runs on one intra-op thread: its kernels are small, and a second thread costs more
    than it gives (19.5 vs 11.2 ms a step on this 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg, ropes, seeds, progress, compile)
    finally:
        torch.set_num_threads(threads)


def _train(cfg, ropes, seeds, progress, compile) -> list[ToyRun]:
    ropes_m = [r for r in ropes for _ in seeds]
    seeds_m = [s for _ in ropes for s in seeds]
    stack = _Stack(cfg, ropes_m, seeds_m, compile=compile)
    M, start = len(ropes_m), time.perf_counter()
    opt = torch.optim.Adam([stack.q, stack.k, stack.v], lr=cfg.lr, fused=True)
    # one data stream per seed, shared by its rope and no-rope heads (a paired comparison)
    gens = {s: torch.Generator().manual_seed(10_000 + s) for s in seeds}
    per_epoch = math.ceil(cfg.samples_per_epoch / cfg.batch)
    history = []
    bar = tracker(total=cfg.steps, desc=f"toy ×{M} (rope {sorted(set(ropes))}, seeds {list(seeds)})",
                  disable=not progress, mininterval=2.0)
    for _ in range(cfg.epochs):
        drawn = {s: _sample(g, 1, per_epoch * cfg.batch, cfg) for s, g in gens.items()}
        target, subset, pos = (torch.cat([drawn[s][i] for s in seeds_m]) for i in range(3))
        total = torch.zeros(M)
        for s in range(per_epoch):
            sl = slice(s * cfg.batch, (s + 1) * cfg.batch)
            loss = stack.losses(target[:, sl], subset[:, sl], pos[:, sl]).mean(-1)  # [M]
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # models are independent: their gradients don't mix
            opt.step()
            total += loss.detach()
            bar.update(1)
        history.append((total / per_epoch).tolist())
        bar.set_postfix(loss=" ".join(f"{x:.2f}" for x in history[-1]))
    bar.close()
    seconds = (time.perf_counter() - start) / M
    first, last, removed = _removal_curves(stack, cfg)
    runs = []
    for m in range(M):
        runs.append(ToyRun(
            rope=ropes_m[m], seed=seeds_m[m], q=stack.table("q", m),
            k=stack.table("k", m), v=stack.table("v", m), removed=removed,
            loss_first=first[:, m], loss_last=last[:, m],
            train_loss=[h[m] for h in history], seconds=seconds, init_std=cfg.init_std))
    return runs


@torch.no_grad()
def _removal_curves(stack: _Stack, cfg: ToyConfig):
    """Fig. 1b: per-sample loss with the first / last k dims of q (hence of q·k) removed,
    on a fixed evaluation set (seed 12345) shared by every model."""
    gen = torch.Generator().manual_seed(12345)
    M = stack.m
    target, subset, pos = _sample(gen, 1, cfg.eval_samples, cfg)
    target, subset, pos = (t.expand(M, *t.shape[1:]) for t in (target, subset, pos))
    removed = list(range(0, cfg.dim + 1, cfg.removal_step))
    if removed[-1] != cfg.dim:
        removed.append(cfg.dim)
    idx = torch.arange(cfg.dim)
    keeps = {("first", k): (idx >= k).float() for k in removed}
    keeps.update({("last", k): (idx < cfg.dim - k).float() for k in removed})
    out = {key: [] for key in keeps}
    for lo in range(0, cfg.eval_samples, 256):  # chunks keep memory small
        chunk = [t[:, lo:lo + 256] for t in (target, subset, pos)]
        for key, keep in keeps.items():
            out[key].append(stack._eager(*chunk, keep))
    first = torch.stack([torch.cat(out["first", k], dim=-1) for k in removed])
    last = torch.stack([torch.cat(out["last", k], dim=-1) for k in removed])
    return first, last, removed  # [R, M, eval_samples] each


def trained(cfg: ToyConfig, seeds, progress: bool = True) -> dict[str, list[ToyRun]]:
    """Both setups over ``seeds``, trained once and cached on disk: {"rope": [...], "norope": [...]}."""
    spec = {"config": cfg.to_dict(), "seeds": list(seeds), "code": CODE_VERSION}
    runs = cache.cached("toy", spec, lambda: train(cfg, ropes=(True, False), seeds=seeds, progress=progress))
    return {"rope": [r for r in runs if r.rope], "norope": [r for r in runs if not r.rope]}


def magnitude(run: ToyRun) -> torch.Tensor:
    """Fig. 1a: average magnitude of q and k per dimension, [2, dim] (row 0 q, row 1 k)."""
    return torch.stack((run.q.abs().mean(0), run.k.abs().mean(0)))


def with_overrides(cfg: ToyConfig, **overrides) -> ToyConfig:
    return replace(cfg, **overrides)
