"""Beyond the paper: RoPE's frequency use seen in activations, not weights (issue 19, §3
and §4), a second witness for C5a (W_q row norms) and C5b (utility).

Barbero et al. (ICLR 2025, "Round and Round We Go!") draw, per layer, head and rotary pair,
the mean 2-norm of the query and key pair over the tokens of many prompts; Jin et al.
(ICML 2025, "Massive Values in Self-Attention Modules ...") find each head's largest
query dim ("massive value") in the low frequencies and ablate it by its mean over tokens.

What is captured (one forward pass per analysis example, the prompt alone, no answer):
- ``q_pair`` [E, L, H, P]: per example, the mean over tokens of ‖(q_j, q_{j+P})‖₂ of the
  query before RoPE (after any q norm), P = rotary pairs in storage order (pair j rotates
  storage j with j + P, HF's half split). A rotation keeps a pair's norm, so this is also
  the norm of the pair attention sees (up to YaRN's cos/sin multiplier).
- ``k_pair`` [E, L, KVH, P]: the same for the key, read after RoPE (rotation-invariant)
  and divided by the layer's RoPE attention scaling.
- ``q_abs`` [E, L, H, Dh]: mean |q| per query dim before RoPE; ``q_mean`` [L, H, Dh]: the
  mean of q over every token of every example (what a mean ablation puts in).
- ``local`` [E, L, H]: the attention mass each head's query at position t puts on the
  keys t and t − 1 (same and previous token), averaged over the positions t ≥ 2.
Tokens: every prompt token but the first (the attention sink, whose activations are
outliers in most models; our choice). Only these reductions are cached, never activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import cache
from . import prompts as P
from .anatomy import mask_shape
from .generation import mask_digest
from .hooks import capture, replaced_before_rope
from .logprob import Intervention
from .progress import progress
from .retrieval import attention_rows

__all__ = ["ActivationStats", "compute_activation_stats", "pair_rank", "replace_query_dims",
           "CODE_VERSION"]

CODE_VERSION = 1
FIRST_TOKEN = 1  # tokens from this position on enter the norms (position 0, the sink, is left out)


@cache.storable
@dataclass
class ActivationStats:
    q_pair: torch.Tensor  # [E, L, H, P] mean pre-RoPE query pair norm over tokens
    k_pair: torch.Tensor  # [E, L, KVH, P] mean key pair norm over tokens
    q_abs: torch.Tensor  # [E, L, H, Dh] mean |q| per dim (pre-RoPE)
    q_mean: torch.Tensor  # [L, H, Dh] mean q per dim over all tokens of all examples
    local: torch.Tensor  # [E, L, H] attention mass on the same and the previous token
    tokens: list  # tokens of each example that entered the norms
    n_examples: int
    tokens_rule: str  # which tokens, in words


def pair_rank(anatomy) -> torch.Tensor:
    """θ rank (0 = highest frequency) of each rotary pair j (storage j with j + P), [L, P]."""
    return anatomy.rank[:, : anatomy.n_pairs].clone()


def _pair_norm(x: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """x [..., Dh] (half split) -> pair norms [..., P]."""
    x = x.float()
    return torch.sqrt(x[..., :n_pairs] ** 2 + x[..., n_pairs:2 * n_pairs] ** 2)


def _one(loaded, prompt) -> dict:
    tok = P.tokenize_prompt(prompt, loaded.tokenizer)
    ids = torch.tensor([tok.input_ids], device=loaded.device)
    a = loaded.anatomy
    with torch.inference_mode(), capture(loaded.model, keep=("q_pre", "q", "k")) as cap:
        loaded.model(input_ids=ids, logits_to_keep=1)
    T = ids.shape[1]
    out = {k: [] for k in ("q_pair", "k_pair", "q_abs", "q_sum", "local")}
    rows = torch.arange(T)
    for i in sorted(cap):
        c = cap[i]
        q = c.q_pre[0, :, FIRST_TOKEN:].float().cpu()  # [H, S, Dh]
        k = c.k[0, :, FIRST_TOKEN:].float().cpu() / a.rope_attention_scaling[i]  # [KVH, S, Dh]
        out["q_pair"].append(_pair_norm(q, a.n_pairs).mean(1))
        out["k_pair"].append(_pair_norm(k, a.n_pairs).mean(1))
        out["q_abs"].append(q.abs().mean(1))
        out["q_sum"].append(q.sum(1).double())
        w = attention_rows(c.q, c.k, rows, c.scaling, c.window)[0].cpu()  # [H, T, T]
        t = torch.arange(2, T)
        out["local"].append((w[:, t, t] + w[:, t, t - 1]).mean(-1))
        del w
    return {k: torch.stack(v) for k, v in out.items()} | {"tokens": T - FIRST_TOKEN}


def compute_activation_stats(loaded, prompts) -> ActivationStats:
    """One forward pass per prompt; per-pair norms, per-dim |q|, local attention mass."""
    per = [_one(loaded, p) for p in progress(prompts, desc="activations (q, k pair norms)")]
    tokens = [p["tokens"] for p in per]
    q_mean = (sum(p["q_sum"] for p in per) / sum(tokens)).float()
    stack = lambda k: torch.stack([p[k] for p in per]).float()
    return ActivationStats(stack("q_pair"), stack("k_pair"), stack("q_abs"), q_mean, stack("local"), tokens,
                           len(per), f"every prompt token from position {FIRST_TOKEN} on (the prompt alone)")


# ---------------------------------------------------------------- §4b: one query dim replaced

def replace_query_dims(name: str, dims: torch.Tensor, values: torch.Tensor) -> Intervention:
    """Per head, the pre-RoPE query dim ``dims[l, h]`` (storage index) replaced by
    ``values[l, h]`` at every position (Jin et al.'s mean ablation when the values are the
    dims' means over tokens), by ``hooks.replaced_before_rope``; removed on exit, also on error."""
    dims, values = dims.long().cpu(), values.float().cpu()

    def enter(model):
        shape = mask_shape(model)
        mask = torch.ones(shape).scatter_(2, dims[..., None], 0.0)
        fill = torch.zeros(shape).scatter_(2, dims[..., None], values[..., None])
        return replaced_before_rope(model, "q", mask, fill)

    return Intervention(name, {"kind": "replace-query-dims", "dims": mask_digest(dims), "values": mask_digest(values)}, enter)
