"""Dimension utility scores (§5.2, Eq. 4).

The paper: "for each attention head of 2D dimensions at layer ℓ with index i we find a
masking vector u_{ℓ,i} ∈ [0, 1]^{2D} over the query vector that minimizes
‖Attn_{ℓ,i}(q, K, V) − Attn_{ℓ,i}(q ⊙ u_{ℓ,i}, K, V)‖²₂ + α‖u_{ℓ,i}‖₁ (4), where we set
the hyper-parameter α = 1/(2D). We then treat the value of u in each dimension as the
utilization score of that dimension." Inputs: "the concatenation of the instruction, the
documents, the question, and LLMs' generation".

Readings (``READINGS``; the paper leaves these open, the report shows every one):
- ``literal`` (primary): per example, the squared error summed over the query positions
  of the whole input (the norm of the head's output over its input), plus α‖u‖₁; over
  examples, the mean of those objectives; u multiplies the query BEFORE RoPE, so q·k still
  depends on positions only through n − m (Eq. 2). The context rows' sum is estimated
  without bias from a seeded uniform sample (every question/answer row is kept),
  weighted back up.
- ``qa-sum``: the same over the question-and-answer rows only.
- ``qa-mean``: the mean over the question-and-answer rows pooled over examples, u after
  RoPE (ropedim's reading before it was calibrated against Table 1).
- ``post-rope``: the literal reading with u after RoPE.

Solver choices (``UtilityConfig``; the paper gives none): projected Adam on u itself
(init u = 1, step, clamp to [0, 1]; u reaches 0 and 1 exactly), all heads of all layers
at once (Adam is elementwise, so the sum of the per-head objectives optimises each head's
own), each head stopped when the range of its objective over the last ``patience`` steps
is below ``tol`` × |objective|, or after ``max_steps``. K and V are the head's KV head (GQA).

Query layout. With u before RoPE, q_post = R(u ⊙ q_pre) = A ⊙ u + B ⊙ u[partner], where
A = s·cos ⊙ q_pre, B = s·sin ⊙ rotate_half(q_pre) (s: RoPE's attention scaling) and
``partner`` swaps the two coordinates of each rotary pair; after RoPE, A = q_post, B = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .attention import key_bias
from .progress import progress
from .capture import LayerCapture, in_layer_order, query_positions
from .rope import pair_partner, rotate_half, storage_cos_sin

__all__ = ["Reading", "READINGS", "PRIMARY", "UtilityConfig", "UtilityResult", "RoPE", "query_rows",
           "prepare", "utility_scores", "utility_scores_loop"]


@dataclass(frozen=True)
class Reading:
    name: str
    rows: str  # "all": every position of the input; "qa": the question-and-answer part
    reduce: str  # "sum": per example the error summed over rows, then the mean over examples; "mean": pooled mean
    site: str  # "pre": u ⊙ q before RoPE; "post": after
    context_rows: int = 32  # rows="all": context rows sampled to estimate their sum

    def __post_init__(self):
        if (self.rows, self.reduce, self.site) not in {(r, m, s) for r in ("all", "qa") for m in ("sum", "mean")
                                                       for s in ("pre", "post")}:
            raise ValueError(f"reading {self.name}: rows all|qa, reduce sum|mean, site pre|post; got "
                             f"{self.rows}, {self.reduce}, {self.site}")


READINGS = {r.name: r for r in [
    Reading("literal", "all", "sum", "pre"),
    Reading("qa-sum", "qa", "sum", "pre"),
    Reading("qa-mean", "qa", "mean", "post"),
    Reading("post-rope", "all", "sum", "post"),
]}
PRIMARY = "literal"


@dataclass(frozen=True)
class UtilityConfig:
    """Optimiser settings (the paper gives none); ``seed`` drives the sampled context rows.
    lr 0.05 and 0.02 give the same u under the literal reading (SmolLM2, synthetic task,
    36 examples: mean |Δu| 0.0007, 0.02% of dims on the other side of 0.5); earlier, under
    the pooled mean, lr 0.01 / 0.02 / 0.05 landed within mean |Δu| < 0.01 of a long run."""

    alpha: float | None = None  # None: 1/Dh, the paper's α = 1/(2D)
    lr: float = 0.05  # Adam step; u moves ~lr per step
    max_steps: int = 500
    tol: float = 1e-3  # relative range of the objective over `patience` steps
    patience: int = 30
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    groups_per_chunk: int | None = 8  # KV groups (L*KVH of them) per pass; None: all
    seed: int = 0


@dataclass
class UtilityResult:
    u: torch.Tensor  # [L, H, Dh] utility score of each (storage-order) query dim
    loss: torch.Tensor  # [L, H] final objective: error + α‖u‖₁
    error: torch.Tensor  # [L, H] final error term of the objective
    steps: torch.Tensor  # [L, H] Adam steps taken
    converged: torch.Tensor  # [L, H] stopped by the tolerance (not by max_steps)


@dataclass(frozen=True)
class RoPE:
    """What u before RoPE needs: each layer's θ [L, rotary_dim / 2], the rotary dims and
    the attention scaling on cos/sin (``ropedim.anatomy.Anatomy`` has all three)."""

    theta: torch.Tensor
    rotary_dim: int
    attention_scaling: tuple[float, ...]

    @classmethod
    def of(cls, anatomy) -> "RoPE":
        return cls(anatomy.theta, anatomy.rotary_dim, tuple(anatomy.rope_attention_scaling))


def query_rows(reading: Reading, question_start: int, n_tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions [S] and their weights [S] for one example: the question-and-answer
    rows (weight 1), and for ``rows="all"`` a seeded uniform sample of the context rows
    [0, question_start) weighted by (context rows / sample size): an unbiased estimate of
    the sum over every position."""
    qa = torch.arange(question_start, n_tokens)
    if reading.rows == "qa" or question_start == 0:
        return qa, torch.ones(len(qa))
    k = min(reading.context_rows, question_start)
    sample = torch.randperm(question_start, generator=torch.Generator().manual_seed(seed))[:k].sort().values
    return torch.cat([sample, qa]), torch.cat([torch.full((k,), question_start / k), torch.ones(len(qa))])


@dataclass
class _Example:
    """One example, heads grouped by KV head: N = L * KVH groups of G = H // KVH heads.
    K and V keep the captures' dtype (bfloat16 models made them in it: lossless), the rest
    is float32; the solver upcasts each chunk on its own device."""

    qa: torch.Tensor  # [N, B, G, Tq, Dh] the scaled query's part multiplied by u
    qb: torch.Tensor | None  # [N, B, G, Tq, Dh] its part multiplied by u[partner] (u before RoPE), else None
    kt: torch.Tensor  # [N, B, Dh, T]
    v: torch.Tensor  # [N, B, T, Dh]
    bias: torch.Tensor  # [N, 1, Tq, T - t0] mask on the key columns t0: (causal / window)
    t0: int  # keys before t0 are seen by every query
    w: torch.Tensor  # [Tq] weight of each query row in the error
    partner: torch.Tensor  # [Dh] the other coordinate of each rotary pair
    n_layers: int
    target: torch.Tensor | None = None  # [N, B, G, Tq, Dh] Attn(q, K, V)

    def to(self, device) -> "_Example":
        """The example on ``device`` (e.g. the CPU, to wait there for the solver)."""
        mv = lambda x: None if x is None else x.to(device)
        return _Example(mv(self.qa), mv(self.qb), mv(self.kt), mv(self.v), mv(self.bias), self.t0, mv(self.w),
                        mv(self.partner), self.n_layers, mv(self.target))


def _take(x: torch.Tensor, idx: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """x[idx] along dim 0 (a view when idx is a contiguous run), as float32 on the device
    of ``like`` when given."""
    a, n = int(idx[0]), idx.numel()
    x = x[a:a + n] if int(idx[-1]) - a + 1 == n else x[idx.to(x.device)]
    return x if like is None else x.to(like.device, torch.float32)


def _forward(ex: _Example, u: torch.Tensor, idx: torch.Tensor):
    """Attn(q(u), K, V) of the groups ``idx``; u [n, G, Dh].

    Returns out [n, B, G, Tq, Dh], p [n, B, G*Tq, T], kt and v."""
    qa, kt, v = _take(ex.qa, idx, u), _take(ex.kt, idx, u), _take(ex.v, idx, u)
    n, B, G, Tq, Dh = qa.shape
    qu = qa * u[:, None, :, None, :]
    if ex.qb is not None:
        qu = qu + _take(ex.qb, idx, u) * u[..., ex.partner.to(u.device)][:, None, :, None, :]
    logits = (qu.view(n, B, G * Tq, Dh) @ kt).view(n, B, G, Tq, -1)  # [n, B, G, Tq, T]
    logits[..., ex.t0:] += _take(ex.bias, idx, u)[:, :, None]
    p = logits.softmax(-1).view(n, B, G * Tq, -1)  # every query sees itself: no empty row
    return (p @ v).view(n, B, G, Tq, Dh), p, kt, v


def _error_and_grad(ex: _Example, u: torch.Tensor, idx: torch.Tensor, norm: float, grad: bool):
    """Weighted squared error Σ_t w_t ‖Δo_t‖² / norm per head [n, G] and its gradient wrt u.

    Hand-written backward of softmax attention (no autograd graph kept):
    dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dO ⊙ O)), dq = dS K, du = Σ_t dq ⊙ A + (Σ_t dq ⊙ B)[partner].
    """
    out, p, kt, v = _forward(ex, u, idx)
    diff = out - _take(ex.target, idx, u)  # [n, B, G, Tq, Dh]
    w = ex.w.to(u.device)[None, None, None, :, None]
    err = (diff.pow(2) * w).sum((1, 3, 4)) / norm
    if not grad:
        return err, None
    n, B, G, Tq, Dh = out.shape
    d_out = (2.0 / norm) * w * diff
    dp = d_out.view(n, B, G * Tq, Dh) @ v.transpose(-1, -2)  # [n, B, G*Tq, T]
    dp.sub_((d_out * out).sum(-1).view(n, B, G * Tq, 1)).mul_(p)
    dq = (dp @ kt.transpose(-1, -2)).view(n, B, G, Tq, Dh)
    g = (dq * _take(ex.qa, idx, u)).sum((1, 3))
    if ex.qb is not None:
        g = g + (dq * _take(ex.qb, idx, u)).sum((1, 3))[..., ex.partner.to(u.device)]
    return err, g


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
    return q if q.shape[2] == q_pos.numel() else q[:, :, q_pos.to(q.device)]


def prepare(example: Any, config: UtilityConfig = UtilityConfig(), weights: torch.Tensor | None = None,
            rope: RoPE | None = None) -> _Example:
    """One example in the batched layout (copies of its q, K, V and the unmasked output).

    ``example``: (captures, q_pos) or captures alone (their own q_pos); ``weights`` [Tq] of
    the query rows (default 1); ``rope``: u before RoPE (the captures then need q_pre),
    None: u after RoPE. Prepare examples as they are captured and drop the captures:
    ``utility_scores`` takes prepared examples, so one copy of many long examples is held."""
    with torch.no_grad():
        caps, q_pos = _pair(example)
        return _prepare(caps, q_pos, config, weights, rope)


def _query_parts(caps, q_pos, T, rope: RoPE | None):
    """A and B [L, B, H, Tq, Dh] of the scaled query (see the module docstring)."""
    if rope is None:
        return torch.stack([_query_rows(c.q, q_pos, T).float() * c.scaling for c in caps]), None
    a, b = [], []
    for layer, c in enumerate(caps):
        if c.q_pre is None:
            raise ValueError("u before RoPE needs the pre-RoPE query: capture with keep=('q_pre', ...)")
        x = _query_rows(c.q_pre, q_pos, T).float()  # [B, H, Tq, Dh]
        cos, sin = storage_cos_sin(rope.theta[layer], q_pos.to(x.device), x.shape[-1])  # [Tq, Dh]
        s = rope.attention_scaling[layer] * c.scaling
        rot = torch.cat((rotate_half(x[..., :rope.rotary_dim]), torch.zeros_like(x[..., rope.rotary_dim:])), -1)
        a.append(x * cos * s)
        b.append(rot * sin * s)
    return torch.stack(a), torch.stack(b)


def _prepare(captures: list[LayerCapture], q_pos: torch.Tensor, cfg: UtilityConfig, weights, rope) -> _Example:
    T, KVH = captures[0].k.shape[2], captures[0].k.shape[1]
    qa, qb = _query_parts(captures, q_pos, T, rope)  # [L, B, H, Tq, Dh]
    L, B, H, Tq, Dh = qa.shape

    def grouped(x):  # [L, B, H, Tq, Dh] -> [L*KVH, B, G, Tq, Dh]
        return x.view(L, B, KVH, H // KVH, Tq, Dh).transpose(1, 2).reshape(L * KVH, B, H // KVH, Tq, Dh)

    t_eff = int(q_pos.max()) + 1  # keys after the last query are never seen
    kv = lambda name: torch.stack([getattr(c, name)[:, :, :t_eff] for c in captures])  # the model's dtype
    kt = kv("k").transpose(1, 2).reshape(L * KVH, B, t_eff, Dh).transpose(-1, -2).contiguous()
    v = kv("v").transpose(1, 2).reshape(L * KVH, B, t_eff, Dh).contiguous()
    bias = torch.stack([key_bias(q_pos.to(qa.device), t_eff, c.window) for c in captures])
    masked = bias.isinf().any(0).any(0).nonzero()  # key columns masked for some query
    t0 = int(masked[0]) if masked.numel() else t_eff
    bias = bias[:, :, t0:].repeat_interleave(KVH, 0)[:, None]  # [N, 1, Tq, T - t0]
    w = torch.ones(Tq, device=qa.device) if weights is None else torch.as_tensor(weights, dtype=torch.float32,
                                                                              device=qa.device)
    partner = (pair_partner(Dh, rope.rotary_dim, qa.device) if rope is not None
               else torch.arange(Dh, device=qa.device))
    ex = _Example(grouped(qa), None if qb is None else grouped(qb), kt, v, bias, t0, w, partner, L)
    ones = torch.ones(cfg.groups_per_chunk or L * KVH, H // KVH, Dh, device=qa.device)
    ex.target = torch.cat([_forward(ex, ones[: idx.numel()], idx)[0]
                           for idx in torch.arange(L * KVH, device=qa.device).split(ones.shape[0])])
    return ex


def utility_scores(examples: Sequence[Any], config: UtilityConfig = UtilityConfig(),
                   reduce: str = "sum", device=None) -> UtilityResult:
    """Eq. 4 for all heads of all layers at once.

    examples: ``prepare``d examples (prepared with the same config), or (captures, q_pos)
    / captures alone (prepared here: unit weights, u after RoPE). ``reduce``: "sum" — the
    objective is the mean over examples of each example's weighted error sum (the literal
    reading); "mean" — the weighted error pooled over all rows of all examples, divided by
    their count. The optimisation runs in float32 on ``device`` (default: the first
    example's); examples elsewhere (the CPU, where memory ran short) are moved there chunk
    by chunk. Results are on the CPU."""
    cfg = config
    exs = [e if isinstance(e, _Example) else prepare(e, cfg) for e in examples]
    dev = torch.device(device) if device is not None else exs[0].qa.device
    L = exs[0].n_layers
    N, _, G, _, Dh = exs[0].qa.shape
    if reduce == "sum":
        norm = float(len(exs))
    elif reduce == "mean":
        norm = float(sum(e.qa.shape[1] * e.qa.shape[3] for e in exs))  # queries pooled over examples
    else:
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    alpha = 1.0 / Dh if cfg.alpha is None else cfg.alpha
    chunk = cfg.groups_per_chunk or N
    b1, b2 = cfg.betas

    def error(u: torch.Tensor, groups: torch.Tensor, grad: bool):
        err, g = torch.zeros(N, G, device=dev), torch.zeros(N, G, Dh, device=dev)
        for idx in groups.split(chunk):
            for e in exs:
                d, dg = _error_and_grad(e, u[idx], idx, norm, grad)
                err[idx] += d
                if grad:
                    g[idx] += dg
        return err, g

    u = torch.ones(N, G, Dh, device=dev)  # heads grouped by KV head; [L, H, Dh] on return
    m, v2 = torch.zeros_like(u), torch.zeros_like(u)
    steps = torch.zeros(N, G, dtype=torch.long, device=dev)
    active = torch.ones(N, G, dtype=torch.bool, device=dev)
    hist = []  # objective [N, G] of the last `patience` + 1 steps
    bar = progress(total=cfg.max_steps, desc=f"utility (Eq. 4), {N * G} heads", disable=N * G < 16)
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


def utility_scores_loop(examples: Sequence[Any], config: UtilityConfig = UtilityConfig(),
                        reduce: str = "sum") -> UtilityResult:
    """Reference: the same optimisation (u after RoPE, unit weights) run head by head
    (slow; for tests and benchmarks)."""
    examples = [_pair(e) for e in examples]
    L, H = len(examples[0][0]), examples[0][0][0].q.shape[1]
    res = [[utility_scores([([_one_head(c[l], h)], p) for c, p in examples], config, reduce)
            for h in range(H)] for l in range(L)]
    cat = lambda name: torch.stack([torch.cat([getattr(r, name) for r in row], 1)[0] for row in res])
    return UtilityResult(*(cat(n) for n in ("u", "loss", "error", "steps", "converged")))
