"""Greedy decoders: a left-padded batch on the model's own attention (:class:`Padded`)
and B contexts prefilled once, each continued under V query masks (:class:`SharedContext`,
``ropedim.shared_prefix``), both driven by :func:`greedy`.

Decoding is greedy (Liu et al. use temperature 0), at most ``max_new_tokens`` new tokens
(Liu et al.: 100), stopping at EOS or at the first newline: Liu et al. score only the
text before it (``response.split("\n")[0]``), so nothing after it can count. Position ids
come from the attention mask, so padding never shifts RoPE.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from .devices import input_device
from .hooks import masked
from .shared_prefix import SharedPrefix, attending, prefill

__all__ = ["Answer", "Padded", "SharedContext", "greedy", "left_pad", "eos_ids", "pad_id"]


class Answer(str):
    """A generated answer: its text, and ``ids``, the token ids the model generated (Eq. 4
    reads the model's own tokens, not the text re-tokenised)."""

    ids: tuple[int, ...]

    def __new__(cls, text: str, ids=()):
        obj = super().__new__(cls, text)
        obj.ids = tuple(int(i) for i in ids)
        return obj


def left_pad(seqs: Sequence[Sequence[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, T] left-padded with ``pad`` and their attention mask [B, T], on
    ``device`` (default: the CPU)."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(seqs), n), dtype=torch.long, device="cpu")
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, n - len(s):] = torch.tensor(s, device="cpu")
            mask[i, n - len(s):] = 1
    return ids.to(device or "cpu"), mask.to(device or "cpu")


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None)
    ids.update(e if isinstance(e, (list, tuple)) else [e])
    return {i for i in ids if i is not None}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class Padded:
    """A left-padded batch on the model's own attention; ``mask`` covers past and new
    tokens; the query mask ``qmask`` [L, H, Dh] applies from ``from_position`` on."""

    def __init__(self, model, ids, mask, qmask=None, from_position=None):
        dev = input_device(model)
        self.model, self.ids, self.mask, self.past = model, ids.to(dev), mask.to(dev), None
        self.qmask, self.from_position = qmask, from_position

    def _forward(self, ids, n_new):
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -n_new:]
        ctx = (contextlib.nullcontext() if self.qmask is None
               else masked(self.model, self.qmask, from_position=self.from_position))
        with ctx:
            out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=pos,
                             past_key_values=self.past, use_cache=True, logits_to_keep=1)
        self.past = out.past_key_values
        return out.logits[:, -1].float().argmax(-1)

    def first(self) -> torch.Tensor:
        return self._forward(self.ids, self.ids.shape[1])

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        return self._forward(tokens[:, None], 1)

    def keep(self, idx: torch.Tensor) -> None:
        self.past.batch_select_indices(idx)
        self.mask = self.mask[idx]


class SharedContext:
    """B contexts prefilled once; each continues (question, then answer) in V rows, row
    b * V + v under query mask v of ``masks`` [V, L, H, Dh], applied before RoPE where
    ``before_rope`` [V] says so (``ropedim.shared_prefix``, ``ropedim.hooks.masked``). The
    prefill is unmasked, or (``masked_prefill``, one variant) under that variant's mask."""

    def __init__(self, model, contexts: list[list[int]], q_ids, q_mask, masks: torch.Tensor, max_new_tokens: int,
                 before_rope: torch.Tensor | bool = False, masked_prefill: bool = False):
        self.model, self.masks, self.before_rope, n_var = model, masks, before_rope, masks.shape[0]
        if masked_prefill and n_var != 1:
            raise ValueError(f"a masked prefill serves one mask variant, not {n_var}")
        ctx = (masked(model, masks[0], before_rope=before_rope) if masked_prefill else contextlib.nullcontext())
        with ctx:
            keys, values, pre_pos = prefill(model, contexts)
        q_ids, q_mask = q_ids.to(pre_pos.device), q_mask.to(pre_pos.device)
        q_pos = torch.where(q_mask.bool(), (pre_pos >= 0).sum(-1, keepdim=True) + q_mask.cumsum(-1) - 1, -1)
        rows = torch.arange(len(contexts) * n_var, device=pre_pos.device)
        self.state = SharedPrefix(keys, values, pre_pos, n_var, rows, q_pos[:, :0].repeat_interleave(n_var, 0),
                                  capacity=q_ids.shape[1] + max_new_tokens)
        self.ids, self.q_pos = q_ids.repeat_interleave(n_var, 0), q_pos.repeat_interleave(n_var, 0)

    def _forward(self, ids, pos):
        self.state.append(pos)
        n_var = self.state.n_variants
        with attending(self.model, self.state), masked(self.model, self.masks, before_rope=self.before_rope,
                                                      variant_of_row=lambda: self.state.rows % n_var):
            out = self.model(input_ids=ids, position_ids=pos.clamp(min=0), use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float().argmax(-1)

    def first(self) -> torch.Tensor:
        return self._forward(self.ids, self.q_pos)

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._forward(tokens[:, None], self.state.suffix_pos[:, -1:] + 1)

    def keep(self, idx: torch.Tensor) -> None:
        self.state.keep(idx)


@torch.inference_mode()
def greedy(decoder, tokenizer, eos: set[int], n_rows: int, max_new_tokens: int) -> list[Answer]:
    """Greedy continuation of every row of ``decoder`` (:class:`Padded` or :class:`SharedContext`)."""
    nxt = decoder.first()
    gen: list[list[int]] = [[] for _ in range(n_rows)]
    rows = list(range(n_rows))  # the rows still decoding
    for step in range(max_new_tokens):
        alive = []
        for j, (b, t) in enumerate(zip(rows, nxt.tolist())):
            if t in eos:
                continue
            gen[b].append(t)
            if "\n" not in tokenizer.decode(gen[b], skip_special_tokens=True):
                alive.append(j)  # Liu et al. score the first line only: stop at a newline
        if not alive or step == max_new_tokens - 1:
            break
        if len(alive) < len(rows):  # drop finished rows from the batch and its cache
            keep = torch.tensor(alive, device=nxt.device)
            decoder.keep(keep)
            nxt, rows = nxt[keep], [rows[j] for j in alive]
        nxt = decoder.next(nxt)
    return [Answer(tokenizer.decode(g, skip_special_tokens=True), g) for g in gen]
