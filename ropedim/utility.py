"""Dimension utility scores (§5.2, Eq. 4).

The paper: "for each attention head of 2D dimensions at layer ℓ with index i we find a
masking vector u_{ℓ,i} ∈ [0, 1]^{2D} over the query vector that minimizes
‖Attn_{ℓ,i}(q, K, V) − Attn_{ℓ,i}(q ⊙ u_{ℓ,i}, K, V)‖²₂ + α‖u_{ℓ,i}‖₁ (4), where we set
the hyper-parameter α = 1/(2D). We then treat the value of u in each dimension as the
utilization score of that dimension." Inputs: "the concatenation of the instruction, the
documents, the question, and LLMs' generation".

Choices the paper leaves open (see ``UtilityConfig``):
- u multiplies the post-RoPE query, coordinate-wise, in storage order (reorder with
  ``ropedim.rope.storage_order``); K and V are the head's shared KV head (GQA).
- Which queries: the rows captured at ``q_pos`` (the caller passes the question and
  output part by default); optionally a seeded random subset of ``max_queries`` rows.
- The squared error is AVERAGED over query positions (all examples pooled), so α = 1/Dh
  weighs ‖u‖₁ against the error of one typical query, whatever the number of queries
  or examples. (A sum would scale the error with the query count and make α ever weaker.)
- Optimiser: projected Adam on u itself: init u = 1, step, clamp to [0, 1]. u reaches 0
  and 1 exactly (a sigmoid could not). Adam is elementwise, so optimising the sum of the
  per-head objectives of all heads at once is the per-head problem for each head.
- Stop per head when the range of its objective over the last ``patience`` steps is below
  ``tol`` × |objective| (that head is then frozen), or after ``max_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .attention import key_bias
from .capture import LayerCapture, in_layer_order, query_positions

__all__ = ["UtilityConfig", "UtilityResult", "prepare", "utility_scores", "utility_scores_loop"]


@dataclass(frozen=True)
class UtilityConfig:
    """Optimiser settings (the paper gives none). Checked on SmolLM2 (6 layers, 38 queries,
    T = 2573): lr 0.01 / 0.02 / 0.05 with these stop rules land within mean |Δu| < 0.01 of a
    long run (lr 0.01, tol 1e-5, 2000 steps), Pearson r > 0.998, < 0.7 % of dims on the other
    side of 0.5; lr 0.02 needs ~130 steps per head on average. ``seed`` only drives the
    ``max_queries`` subset (init and updates are deterministic)."""

    alpha: float | None = None  # None: 1/Dh, the paper's α = 1/(2D)
    lr: float = 0.02  # Adam step; u moves ~lr per step
    max_steps: int = 500
    tol: float = 1e-3  # relative range of the objective over `patience` steps
    patience: int = 30
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_queries: int | None = None  # seeded random subset of query rows per example
    groups_per_chunk: int | None = 8  # KV groups (L*KVH of them) per pass; None: all
    seed: int = 0


@dataclass
class UtilityResult:
    u: torch.Tensor  # [L, H, Dh] utility score of each (storage-order) query dim
    loss: torch.Tensor  # [L, H] final objective: mean error + α‖u‖₁
    error: torch.Tensor  # [L, H] final mean squared error of the head output
    steps: torch.Tensor  # [L, H] Adam steps taken
    converged: torch.Tensor  # [L, H] stopped by the tolerance (not by max_steps)


@dataclass
class _Example:
    """One example, heads grouped by KV head: n = L * KVH groups of G = H // KVH heads.
    K and V keep the captures' dtype (bfloat16 models made them in it: lossless), the rest
    is float32; the solver upcasts each chunk on its own device."""

    qs: torch.Tensor  # [N, B, G, Tq, Dh] query with the scaling folded in
    kt: torch.Tensor  # [N, B, Dh, T]
    v: torch.Tensor  # [N, B, T, Dh]
    bias: torch.Tensor  # [N, 1, Tq, T - t0] mask on the key columns t0: (causal / window)
    t0: int  # keys before t0 are seen by every query
    n_layers: int
    target: torch.Tensor | None = None  # [N, B, G, Tq, Dh] Attn(q, K, V)

    def to(self, device) -> "_Example":
        """The example on ``device`` (e.g. the CPU, to wait there for the solver)."""
        mv = lambda x: None if x is None else x.to(device)
        return _Example(mv(self.qs), mv(self.kt), mv(self.v), mv(self.bias), self.t0, self.n_layers, mv(self.target))


def _take(x: torch.Tensor, idx: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """x[idx] along dim 0 (a view when idx is a contiguous run), as float32 on the device
    of ``like`` when given."""
    a, n = int(idx[0]), idx.numel()
    x = x[a:a + n] if int(idx[-1]) - a + 1 == n else x[idx.to(x.device)]
    return x if like is None else x.to(like.device, torch.float32)


def _forward(ex: _Example, u: torch.Tensor, idx: torch.Tensor):
    """Attn(q ⊙ u, K, V) of the groups ``idx``; u [n, G, Dh].

    Returns out [n, B, G, Tq, Dh], p [n, B, G*Tq, T] and the gathered qs, kt, v."""
    qs, kt, v = _take(ex.qs, idx, u), _take(ex.kt, idx, u), _take(ex.v, idx, u)
    n, B, G, Tq, Dh = qs.shape
    qu = (qs * u[:, None, :, None, :]).view(n, B, G * Tq, Dh)
    logits = (qu @ kt).view(n, B, G, Tq, -1)  # [n, B, G, Tq, T]
    logits[..., ex.t0:] += _take(ex.bias, idx, u)[:, :, None]
    p = logits.softmax(-1).view(n, B, G * Tq, -1)  # every query sees itself: no empty row
    return (p @ v).view(n, B, G, Tq, Dh), p, qs, kt, v


def _error_and_grad(ex: _Example, u: torch.Tensor, idx: torch.Tensor, n_q: int, grad: bool):
    """Summed squared error / n_q per head [n, G] and its gradient wrt u [n, G, Dh].

    Hand-written backward of softmax attention (no autograd graph kept):
    dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dO ⊙ O)), du = Σ_t q ⊙ (dS K).
    """
    out, p, qs, kt, v = _forward(ex, u, idx)
    diff = out - _take(ex.target, idx, u)  # [n, B, G, Tq, Dh]
    err = diff.pow(2).sum((1, 3, 4)) / n_q
    if not grad:
        return err, None
    n, B, G, Tq, Dh = out.shape
    d_out = (2.0 / n_q) * diff
    dp = d_out.view(n, B, G * Tq, Dh) @ v.transpose(-1, -2)  # [n, B, G*Tq, T]
    dp.sub_((d_out * out).sum(-1).view(n, B, G * Tq, 1)).mul_(p)
    dqu = (dp @ kt.transpose(-1, -2)).view(n, B, G, Tq, Dh)
    return err, (dqu * qs).sum((1, 3))


def _pair(example: Any) -> tuple[list[LayerCapture], torch.Tensor]:
    """(captures, q_pos) or captures alone (their own q_pos) -> (layer list, q_pos [Tq])."""
    if isinstance(example, tuple) and len(example) == 2:
        caps, q_pos = example
    else:
        caps, q_pos = example, None
    caps = in_layer_order(caps)
    return caps, query_positions(q_pos, caps)


def _query_rows(q: torch.Tensor, q_pos: torch.Tensor, T: int) -> torch.Tensor:
    """q at the rows of q_pos: q already has them, or has all T positions."""
    return q if q.shape[2] == q_pos.numel() else q[:, :, q_pos]


def prepare(example: Any, config: UtilityConfig = UtilityConfig()) -> _Example:
    """One example in the batched layout (copies of its q, K, V and the unmasked output).
    Prepare examples as they are captured and drop the captures: ``utility_scores`` takes
    prepared examples too, so only one copy of many long examples is ever held."""
    with torch.no_grad():
        return _prepare(*_pair(example), config)


def _prepare(captures: list[LayerCapture], q_pos: torch.Tensor, cfg: UtilityConfig) -> _Example:
    T, KVH = captures[0].k.shape[2], captures[0].k.shape[1]
    qs = torch.stack([_query_rows(c.q, q_pos, T).float() * c.scaling
                      for c in captures])  # [L, B, H, Tq, Dh]
    if cfg.max_queries is not None and q_pos.numel() > cfg.max_queries:
        gen = torch.Generator().manual_seed(cfg.seed)
        keep = torch.randperm(q_pos.numel(), generator=gen)[: cfg.max_queries].sort().values
        qs, q_pos = qs[:, :, :, keep], q_pos[keep]
    L, B, H, Tq, Dh = qs.shape
    qs = qs.view(L, B, KVH, H // KVH, Tq, Dh).transpose(1, 2).reshape(L * KVH, B, H // KVH, Tq, Dh)
    t_eff = int(q_pos.max()) + 1  # keys after the last query are never seen
    kv = lambda name: torch.stack([getattr(c, name)[:, :, :t_eff] for c in captures])  # the model's dtype
    kt = kv("k").transpose(1, 2).reshape(L * KVH, B, t_eff, Dh).transpose(-1, -2).contiguous()
    v = kv("v").transpose(1, 2).reshape(L * KVH, B, t_eff, Dh).contiguous()
    bias = torch.stack([key_bias(q_pos.to(qs.device), t_eff, c.window) for c in captures])
    masked = bias.isinf().any(0).any(0).nonzero()  # key columns masked for some query
    t0 = int(masked[0]) if masked.numel() else t_eff
    bias = bias[:, :, t0:].repeat_interleave(KVH, 0)[:, None]  # [N, 1, Tq, T - t0]
    ex = _Example(qs, kt, v, bias, t0, L)
    ones = torch.ones(cfg.groups_per_chunk or L * KVH, H // KVH, Dh, device=qs.device)
    ex.target = torch.cat([_forward(ex, ones[: idx.numel()], idx)[0]
                           for idx in torch.arange(L * KVH, device=qs.device).split(ones.shape[0])])
    return ex


def utility_scores(examples: Sequence[Any], config: UtilityConfig = UtilityConfig(),
                   device=None) -> UtilityResult:
    """Eq. 4 for all heads of all layers at once.

    examples: a list of (captures, q_pos), of captures alone (then their own ``q_pos``) or
    of ``prepare``d examples (prepared with the same config);
    captures: per layer a ``ropedim.capture.LayerCapture`` with q [B, H, Tq or T, Dh], k, v
    [B, KVH, T, Dh], scaling, window. q_pos: the query positions entering Eq. 4 (the
    caller's choice; the pipeline passes the question and output part). The optimisation
    runs in float32 on ``device`` (default: the first example's); examples elsewhere (the
    CPU, where memory ran short) are moved there chunk by chunk. Results are on the CPU.
    """
    cfg = config
    exs = [e if isinstance(e, _Example) else prepare(e, cfg) for e in examples]
    dev = torch.device(device) if device is not None else exs[0].qs.device
    L = exs[0].n_layers
    N, _, G, _, Dh = exs[0].qs.shape
    n_q = sum(e.qs.shape[1] * e.qs.shape[3] for e in exs)  # queries pooled over examples
    alpha = 1.0 / Dh if cfg.alpha is None else cfg.alpha
    chunk = cfg.groups_per_chunk or N
    b1, b2 = cfg.betas

    def error(u: torch.Tensor, groups: torch.Tensor, grad: bool):
        err, g = torch.zeros(N, G, device=dev), torch.zeros(N, G, Dh, device=dev)
        for idx in groups.split(chunk):
            for e in exs:
                d, dg = _error_and_grad(e, u[idx], idx, n_q, grad)
                err[idx] += d
                if grad:
                    g[idx] += dg
        return err, g

    u = torch.ones(N, G, Dh, device=dev)  # heads grouped by KV head; [L, H, Dh] on return
    m, v2 = torch.zeros_like(u), torch.zeros_like(u)
    steps = torch.zeros(N, G, dtype=torch.long, device=dev)
    active = torch.ones(N, G, dtype=torch.bool, device=dev)
    hist = []  # objective [N, G] of the last `patience` + 1 steps
    bar = tqdm(total=cfg.max_steps, desc=f"utility (Eq. 4), {N * G} heads", disable=N * G < 16)
    with torch.no_grad():
        for _ in range(cfg.max_steps):
            bar.update()
            bar.set_postfix(optimising=int(active.sum()), refresh=False)
            groups = active.any(-1).nonzero()[:, 0]  # skip groups whose heads all stopped
            err, g = error(u, groups, True)
            obj = err + alpha * u.sum(-1)
            hist = (hist + [obj])[-(cfg.patience + 1):]
            if len(hist) > cfg.patience:
                h = torch.stack(hist)
                active &= (h.amax(0) - h.amin(0)) > cfg.tol * obj.abs().clamp_min(1e-12)
            if not active.any():
                break
            g = g + alpha  # d α‖u‖₁ / du on u >= 0
            a = active[..., None]
            steps += active
            t = steps[..., None].clamp_min(1).float()
            m = torch.where(a, b1 * m + (1 - b1) * g, m)
            v2 = torch.where(a, b2 * v2 + (1 - b2) * g * g, v2)
            upd = cfg.lr * (m / (1 - b1**t)) / ((v2 / (1 - b2**t)).sqrt() + cfg.eps)
            u = torch.where(a, (u - upd).clamp(0.0, 1.0), u)
        err, _ = error(u, torch.arange(N, device=dev), False)
    bar.close()
    lh = lambda x: x.reshape(L, -1, *x.shape[2:]).cpu()  # [N, G, ...] -> [L, H, ...]
    return UtilityResult(lh(u), lh(err + alpha * u.sum(-1)), lh(err), lh(steps), lh(~active))


def _one_head(cap: LayerCapture, h: int) -> LayerCapture:
    """Capture of query head h alone with its KV head (GQA: h // (H // KVH))."""
    kv = h // (cap.q.shape[1] // cap.k.shape[1])
    return LayerCapture(q=cap.q[:, h:h + 1], k=cap.k[:, kv:kv + 1], v=cap.v[:, kv:kv + 1],
                        scaling=cap.scaling, window=cap.window)


def utility_scores_loop(examples: Sequence[Any], config: UtilityConfig = UtilityConfig()) -> UtilityResult:
    """Reference: the same optimisation run head by head (slow; for tests and benchmarks)."""
    examples = [_pair(e) for e in examples]
    L, H = len(examples[0][0]), examples[0][0][0].q.shape[1]
    res = [[utility_scores([([_one_head(c[l], h)], p) for c, p in examples], config)
            for h in range(H)] for l in range(L)]
    cat = lambda name: torch.stack([torch.cat([getattr(r, name) for r in row], 1)[0] for row in res])
    return UtilityResult(*(cat(n) for n in ("u", "loss", "error", "steps", "converged")))
