"""The gold answer's teacher-forced log-probability under an intervention: a continuous,
paired measure that needs no decoding (beyond the paper).

Accuracy decides a masking effect from 0/1 answers; the log-probability of the gold
answer given the prompt, log p(answer | prompt) = Σ_t log p(a_t | prompt, a_<t), moves
with every small change and is paired per question. One forward pass per prompt and
intervention, the intervention on at every position (the paper's faithful masking), so it
costs a prefill, not a generation.

The answer's tokens: the first gold answer of each question as the model would write it,
after the prompt (a space first where the prompt ends in "Answer:", the plain style),
tokenised on its own and appended to the prompt's ids.

An :class:`Intervention` is a name, a spec (what determines it: the cache key) and a
context manager factory that hooks the model and restores it on exit: a query mask
(:meth:`Intervention.query_mask`, ``ropedim.hooks.masked``), or any other hook (a whole
head's output zeroed, a dim replaced by its mean) built on ``ropedim.hooks``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch

from .anatomy import mask_shape
from .decode import SharedContext, left_pad, pad_id
from .devices import input_device
from .generation import mask_digest
from .hooks import BeforeRoPE, masked
from .progress import progress
from .prompts import Prompt, encode
from .shared_prefix import attending

__all__ = ["Intervention", "NONE", "answer_ids", "gold_logprob", "fast_gold_logprob"]


@dataclass(frozen=True, eq=False)
class Intervention:
    """``enter(model)`` -> a context manager under which the model is intervened on."""

    name: str
    spec: dict  # JSON-able; everything that determines the intervention (cache keys hold it)
    enter: Callable[[torch.nn.Module], ContextManager] = field(repr=False)

    @classmethod
    def query_mask(cls, name: str, mask) -> "Intervention":
        """A query mask [L, H, Dh] (or ``hooks.BeforeRoPE``; None: nothing), at every position."""
        if mask is None:
            return cls(name, {"kind": "none"}, lambda model: nullcontext())
        return cls(name, {"kind": "query-mask", "mask": mask_digest(mask)}, lambda model: masked(model, mask))


NONE = Intervention.query_mask("none", None)


def answer_ids(prompt: Prompt | str, answer: str, tokenizer) -> list[int]:
    """The tokens of ``answer`` as the model would write it after ``prompt``."""
    text = prompt.text if isinstance(prompt, Prompt) else prompt
    if text.endswith(":"):  # the plain style's "Answer:" is followed by a space
        answer = " " + answer
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"gold answer {answer!r} has no tokens")
    return list(ids)


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # similar lengths together: less padding
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def gold_logprob(loaded, prompts: Sequence[Prompt], answers: Sequence[str],
                 interventions: Sequence[Intervention], batch_size: int = 8,
                 desc: str = "gold log-prob") -> dict[str, np.ndarray]:
    """{intervention name: [len(prompts)] float64}: Σ over the answer's tokens of
    log p(token | prompt, earlier answer tokens), teacher-forced, one forward pass per
    prompt and intervention (right padding; positions are unchanged by it).

    ``loaded``: a ``ropedim.models.Loaded`` (model and tokenizer)."""
    model, tok = loaded.model, loaded.tokenizer
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    names = [iv.name for iv in interventions]
    if len(set(names)) != len(names):
        raise ValueError(f"intervention names repeat: {names}")
    seqs = []  # (ids, first answer position)
    for p, a in zip(prompts, answers):
        ids, _ = encode(p, tok)
        seqs.append((ids + answer_ids(p, a, tok), len(ids)))
    batches = _batches([len(s) for s, _ in seqs], batch_size)
    dev = input_device(model)
    out = {n: np.zeros(len(prompts)) for n in names}
    bar = progress(total=len(batches) * len(interventions), desc=f"{desc}, {len(prompts)} prompts")
    with torch.no_grad():
        for iv in interventions:
            with iv.enter(model):
                for b in batches:
                    T = max(len(seqs[i][0]) for i in b)
                    ids = torch.zeros(len(b), T, dtype=torch.long)
                    att = torch.zeros(len(b), T, dtype=torch.long)
                    for r, i in enumerate(b):
                        s = seqs[i][0]
                        ids[r, :len(s)], att[r, :len(s)] = torch.tensor(s), 1
                    # logits only from the earliest answer-predicting position on (the vocabulary
                    # projection and its softmax dominate a small model with a large vocabulary)
                    keep = T - (min(seqs[i][1] for i in b) - 1)
                    logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev), logits_to_keep=keep).logits
                    logp = logits.float().log_softmax(-1)  # [B, keep, vocab]: position t at t - (T - keep)
                    for r, i in enumerate(b):
                        s, a0 = seqs[i]
                        tgt = torch.tensor(s[a0:], device=logp.device)
                        lo = a0 - 1 - (T - keep)
                        out[iv.name][i] = float(logp[r, lo:lo + len(tgt)].gather(-1, tgt[:, None]).sum())
                    bar.update()
    bar.close()
    return out


# ---------------------------------------------------------------- fast mode: one prefill, every mask after it

def fast_gold_logprob(loaded, prompts: list[Prompt], answers: list[str], variants: dict, batch_size: int = 4,
                      desc: str = "gold log-prob, fast") -> dict[str, np.ndarray]:
    """{variant: [len(prompts)]} log p(gold answer | prompt) with the query mask of each
    variant (name -> [L, H, Dh] mask, ``BeforeRoPE`` mask, or None) applied from the
    question on; the context (instruction and documents) is prefilled once, unmasked, and
    shared by every variant (``ropedim.decode.SharedContext``: the fast sweep's machinery).
    Equal to one forward pass per prompt and variant under ``hooks.masked(...,
    from_position=question start)`` (tests/test_dose.py)."""
    model, tok = loaded.model, loaded.tokenizer
    names = list(variants)
    dev = input_device(model)
    shape = mask_shape(model)
    plain = [variants[v].mask if isinstance(variants[v], BeforeRoPE) else variants[v] for v in names]
    masks = torch.stack([torch.ones(shape) if m is None else torch.as_tensor(m).float() for m in plain]).to(dev)
    before = torch.tensor([isinstance(variants[v], BeforeRoPE) for v in names], device=dev)
    enc = [encode(p, tok) for p in prompts]
    ans = [answer_ids(p, a, tok) for p, a in zip(prompts, answers)]
    order = sorted(range(len(prompts)), key=lambda i: enc[i][0][:enc[i][1]])  # shared prefixes together
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out = {n: np.zeros(len(prompts)) for n in names}
    n_var, pad = len(names), pad_id(tok)
    bar = progress(total=len(batches), desc=f"{desc}, {len(prompts)} prompts × {n_var} masks")
    with torch.inference_mode():
        for b in batches:
            contexts = [enc[i][0][:enc[i][1]] for i in b]
            suffix = [enc[i][0][enc[i][1]:] + ans[i] for i in b]
            s_ids, s_mask = left_pad(suffix, pad, dev)
            dec = SharedContext(model, contexts, s_ids, s_mask, masks, 0, before)
            longest = max(len(ans[i]) for i in b)
            dec.state.append(dec.q_pos)
            with attending(model, dec.state), masked(model, masks, before_rope=before,
                                                     variant_of_row=lambda: dec.state.rows % n_var):
                logits = model(input_ids=dec.ids, position_ids=dec.q_pos.clamp(min=0), use_cache=False,
                               logits_to_keep=longest + 1).logits
            logp = logits.float().log_softmax(-1)  # [R, longest + 1, vocab]; rows end together (left padding)
            for j, i in enumerate(b):
                a = torch.tensor(ans[i], device=logp.device)
                lo = longest - len(ans[i])
                for v, name in enumerate(names):
                    out[name][i] = float(logp[j * n_var + v, lo:longest].gather(-1, a[:, None]).sum())
            bar.update()
    bar.close()
    return out
