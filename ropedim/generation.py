"""Greedy answers to QA prompts, with and without masked query dimensions (§5.2, §5.4).

The paper masks query dimensions "and prompt[s] the model to answer the same questions
again". Decoding is greedy (Liu et al. use temperature 0), at most ``max_new_tokens`` (32)
new tokens, stopping at EOS or at a newline once some text was produced (Liu et al. score
only the first line). Prompts are batched with left padding; position ids come from the
attention mask, so padding never shifts RoPE positions.

Masks are applied by ``ropedim.hooks.masked(model, mask, from_position=None)``. ``sweep``
runs several mask variants over the same prompts:

- ``faithful``: each variant is a full generation, the mask on at every position;
- ``fast``: the context (instruction + documents) is prefilled once, unmasked; then all
  variants continue together, one batch row per (prompt, variant), with the mask on from
  the question start to the end of the answer, reading the shared context's keys and
  values once per context (``ropedim.shared_prefix``). This equals masking from the
  question start (a query mask at positions >= t changes no key or value before t), not
  ``faithful``; the report shows how far the two are apart.

Every answer is cached on disk per prompt, keyed by model and weights, prompt text,
max_new_tokens, dtype, mask and mode (``ropedim.cache``). The batch size is not in the key:
padding only changes float rounding. Batches are fixed over all prompts, so cached or not a
prompt is answered in the same batch; processes that need the same batches (pytest-xdist
workers) split them between them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ropedim import cache as disk
from ropedim.anatomy import mask_shape
from ropedim.hooks import masked
from ropedim.prompts import Prompt, _adds_bos, tokenize_prompt
from ropedim.shared_prefix import SharedPrefix, attending, prefill

__all__ = ["generate", "sweep", "model_fingerprint", "mask_digest", "MODES"]

MODES = ("faithful", "fast")
_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- identities for the cache key
def _unwrap(loaded, tokenizer) -> tuple[torch.nn.Module, Any, str | None]:
    """A model, or an object holding one in ``.model`` (e.g. ``ropedim.models.Loaded``,
    whose ``.tokenizer`` is used when ``tokenizer`` is None)."""
    if isinstance(loaded, torch.nn.Module):
        model, fp = loaded, None
    else:
        model = loaded.model
        fp = getattr(loaded, "fingerprint", None) or getattr(loaded, "weights_id", None)
        tokenizer = tokenizer if tokenizer is not None else getattr(loaded, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("no tokenizer given")
    return model, tokenizer, fp or model_fingerprint(model)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Class, name and a hash of every parameter's bytes (computed once per model object)."""
    if model not in _FINGERPRINTS:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{type(model).__name__}:{getattr(model.config, 'name_or_path', '')}".encode())
        for name, p in model.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
        _FINGERPRINTS[model] = h.hexdigest()
    return _FINGERPRINTS[model]


def mask_digest(mask: Any) -> str | None:
    """A stable hash of a mask (tensor, array, or anything JSON-able / with ``digest()``)."""
    if mask is None:
        return None
    if hasattr(mask, "digest") and callable(mask.digest):
        return str(mask.digest())
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().float().numpy()
    if isinstance(mask, np.ndarray):
        a = np.ascontiguousarray(mask, dtype=np.float32)
        return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:24]
    return hashlib.sha256(json.dumps(mask, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _masking(model, mask, from_position=None):
    if mask is None:
        return contextlib.nullcontext()
    return masked(model, mask, from_position=from_position)


# ---------------------------------------------------------------- greedy decoding
def _encode(p: str | Prompt, tokenizer) -> tuple[list[int], int]:
    """Token ids and question-start token (0 for a bare string)."""
    if isinstance(p, Prompt):
        t = tokenize_prompt(p, tokenizer)
        return t.input_ids, t.question_start
    ids = tokenizer(p, add_special_tokens=False)["input_ids"]
    if _adds_bos(tokenizer) and not p.startswith(tokenizer.bos_token):
        ids = [tokenizer.bos_token_id] + ids
    return list(ids), 0


def _left_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, n - len(s):] = torch.tensor(s)
            mask[i, n - len(s):] = 1
    return ids, mask


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None)
    ids.update(e if isinstance(e, (list, tuple)) else [e])
    return {i for i in ids if i is not None}


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class _Padded:
    """A left-padded batch on the model's own attention; ``mask`` covers past and new tokens."""

    def __init__(self, model, ids, mask, past):
        self.model, self.ids, self.mask, self.past = model, ids, mask, past

    def _forward(self, ids, n_new):
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -n_new:]
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


class _SharedContext:
    """B contexts prefilled once, unmasked; each continues (question, then answer) in V rows,
    row b * V + v under mask variant v (``ropedim.shared_prefix``)."""

    def __init__(self, model, contexts: list[list[int]], q_ids, q_mask, masks: torch.Tensor, max_new_tokens: int):
        self.model, n_var = model, masks.shape[0]
        keys, values, pre_pos = prefill(model, contexts)
        q_pos = torch.where(q_mask.bool(), (pre_pos >= 0).sum(-1, keepdim=True) + q_mask.cumsum(-1) - 1, -1)
        rows = torch.arange(len(contexts) * n_var)
        self.state = SharedPrefix(keys, values, pre_pos, n_var, masks, rows,
                                  q_pos[:, :0].repeat_interleave(n_var, 0), capacity=q_ids.shape[1] + max_new_tokens)
        self.ids, self.q_pos = q_ids.repeat_interleave(n_var, 0), q_pos.repeat_interleave(n_var, 0)

    def _forward(self, ids, pos):
        self.state.append(pos)
        with attending(self.model, self.state):
            out = self.model(input_ids=ids, position_ids=pos.clamp(min=0), use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float().argmax(-1)

    def first(self) -> torch.Tensor:
        return self._forward(self.ids, self.q_pos)

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._forward(tokens[:, None], self.state.suffix_pos[:, -1:] + 1)

    def keep(self, idx: torch.Tensor) -> None:
        self.state.keep(idx)


@torch.inference_mode()
def _greedy(decoder, tokenizer, eos: set[int], n_rows: int, max_new_tokens: int) -> list[str]:
    """Greedy continuation of every row of ``decoder`` (``_Padded`` or ``_SharedContext``)."""
    nxt = decoder.first()
    gen: list[list[int]] = [[] for _ in range(n_rows)]
    rows = list(range(n_rows))  # the rows still decoding
    for step in range(max_new_tokens):
        alive = []
        for j, (b, t) in enumerate(zip(rows, nxt.tolist())):
            if t in eos:
                continue
            gen[b].append(t)
            if "\n" not in tokenizer.decode(gen[b], skip_special_tokens=True).lstrip():
                alive.append(j)  # Liu et al. keep the first line only: stop at a newline
        if not alive or step == max_new_tokens - 1:
            break
        if len(alive) < len(rows):  # drop finished rows from the batch and its cache
            keep = torch.tensor(alive)
            decoder.keep(keep)
            nxt, rows = nxt[keep], [rows[j] for j in alive]
        nxt = decoder.next(nxt)
    return [tokenizer.decode(g, skip_special_tokens=True) for g in gen]


# ---------------------------------------------------------------- disk cache per prompt
def _spec(model, fp, text, max_new_tokens, mask, mode, extra=None) -> dict:
    dtype = str(next(model.parameters()).dtype)
    return {"model": type(model).__name__, "name": getattr(model.config, "name_or_path", ""),
            "weights": fp, "prompt": text, "max_new_tokens": max_new_tokens, "dtype": dtype,
            "mask": mask_digest(mask), "mode": mode, "extra": extra}


def _load(spec, use) -> str | None:
    if not use:
        return None
    path = disk.path_for("generation", spec, ".json")
    return json.loads(path.read_text())["answer"] if path.exists() else None


def _store(spec, answer, use) -> None:
    if use:
        blob = json.dumps({"spec": spec, "answer": answer})
        disk.atomic_write(disk.path_for("generation", spec, ".json"), lambda t: t.write_text(blob))


# ---------------------------------------------------------------- batches shared by processes
def _batches(order: list[int], batch_size: int) -> list[list[int]]:
    """Fixed batches over ALL prompts (not only the uncached ones): the same prompt lands in
    the same batch whatever is cached, so answers do not depend on earlier runs."""
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _run(batches, out: dict[str, list], specs: dict[str, list], use: bool, work, desc: str) -> None:
    """``work(b, names)`` for every batch b with a missing answer; ``names`` are the
    variants it misses. With the cache on, several processes running the same batches
    share them (``ropedim.cache.share_work``) and read each other's answers from disk."""
    def missing(b):
        return [v for v in out if any(out[v][i] is None for i in batches[b])]

    def done(b):
        for v in missing(b):
            for i in batches[b]:
                if out[v][i] is None:
                    out[v][i] = _load(specs[v][i], use)
        return not missing(b)

    bar = tqdm(total=len(batches), desc=desc, disable=all(done(b) for b in range(len(batches))))
    if not use:
        for b in range(len(batches)):
            if missing(b):
                work(b, missing(b))
            bar.update()
    else:
        units = [[specs[v][i] for v in out for i in batch] for batch in batches]
        disk.share_work("batches", units, done, lambda b: work(b, missing(b)), progress=bar)
    bar.close()


def _fill(out: list, specs: list, i: int, answer: str, use: bool) -> None:
    """Keep an answer already there (cached): a batch recomputes every row it holds."""
    if out[i] is None:
        out[i] = answer
        _store(specs[i], answer, use)


# ---------------------------------------------------------------- public API
def generate(loaded_model, tokenizer, prompts: Sequence[str | Prompt], max_new_tokens: int = 32,
             batch_size: int = 8, mask=None, from_position: int | None = None, cache: bool = True,
             desc: str = "generate") -> list[str]:
    """Greedy answers to ``prompts``, each under ``masked(model, mask, from_position)``."""
    model, tokenizer, fp = _unwrap(loaded_model, tokenizer)
    texts = [p.text if isinstance(p, Prompt) else p for p in prompts]
    specs = [_spec(model, fp, t, max_new_tokens, mask, "faithful", from_position) for t in texts]
    out = [None] * len(texts)
    batches = _batches(sorted(range(len(texts)), key=lambda i: len(texts[i])), batch_size)  # less padding

    def work(b, _names):
        batch = batches[b]
        ids, attn = _left_pad([_encode(texts[i], tokenizer)[0] for i in batch], _pad_id(tokenizer))
        with _masking(model, mask, from_position):
            answers = _greedy(_Padded(model, ids, attn, None), tokenizer, _eos_ids(model, tokenizer),
                              len(batch), max_new_tokens)
        for i, a in zip(batch, answers):
            _fill(out, specs, i, a, cache)

    _run(batches, {"": out}, {"": specs}, cache, work, desc)
    return out


def sweep(loaded_model, tokenizer, prompts: Sequence[Prompt], variants: Mapping[str, Any],
          mode: str = "faithful", max_new_tokens: int = 32, batch_size: int = 8,
          cache: bool = True) -> dict[str, list[str]]:
    """Answers to every prompt under every variant (name -> mask or None)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "faithful":
        return {name: generate(loaded_model, tokenizer, prompts, max_new_tokens, batch_size, m,
                               None, cache, desc=f"generate[{name}]") for name, m in variants.items()}
    model, tokenizer, fp = _unwrap(loaded_model, tokenizer)
    enc = [_encode(p, tokenizer) for p in prompts]
    specs = {name: [_spec(model, fp, p.text, max_new_tokens, m, "fast", {"from": q, "attention": "shared"})
                    for p, (_, q) in zip(prompts, enc)] for name, m in variants.items()}
    out = {name: [None] * len(prompts) for name in variants}
    # contexts sharing a prefix side by side
    batches = _batches(sorted(range(len(prompts)), key=lambda i: enc[i][0][:enc[i][1]]), batch_size)
    pad, eos = _pad_id(tokenizer), _eos_ids(model, tokenizer)
    shape = mask_shape(model)

    def work(b, names):
        batch = batches[b]
        masks = torch.stack([torch.ones(shape) if variants[v] is None else torch.as_tensor(variants[v]).float()
                             for v in names])
        q_ids, q_mask = _left_pad([enc[i][0][enc[i][1]:] for i in batch], pad)
        with torch.inference_mode():
            decoder = _SharedContext(model, [enc[i][0][:enc[i][1]] for i in batch], q_ids, q_mask, masks,
                                     max_new_tokens)
        answers = _greedy(decoder, tokenizer, eos, len(batch) * len(names), max_new_tokens)
        for j, i in enumerate(batch):
            for v, name in enumerate(names):
                _fill(out[name], specs[name], i, answers[j * len(names) + v], cache)

    _run(batches, out, specs, cache, work, "sweep[fast]")
    return out
