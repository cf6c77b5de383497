"""Greedy answers to QA prompts, with and without masked query dimensions (§5.2, §5.4),
cached on disk per prompt and shared by processes.

The paper masks query dimensions "and prompt[s] the model to answer the same questions
again". ``sweep`` answers the same prompts under several mask variants:

- ``faithful``: each variant is a full generation, the mask on at every position;
- ``fast``: the context (instruction + documents) is prefilled once, unmasked; then all
  variants continue together, one batch row per (prompt, variant), with the mask on from
  the question start to the end of the answer (``ropedim.decode.SharedContext``). This
  equals masking from the question start (a query mask at positions >= t changes no key
  or value before t), not ``faithful``; the report shows how far the two are apart.

Cache key per answer: model class, name and weights, prompt text, max_new_tokens, dtype,
mask and mode. The batch size is not in the key: padding only changes float rounding. On a
GPU the batch size is at most what fits (``ropedim.memory``; a prompt that cannot fit is an
error before the first batch).
Batches are fixed over all prompts, so cached or not a prompt is answered in the same
batch; processes that need the same batches (pytest-xdist workers) split them
(``ropedim.cache.share_work``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ropedim import cache as disk
from ropedim import memory
from ropedim.anatomy import mask_shape
from ropedim.decode import Answer, Padded, SharedContext, eos_ids, greedy, left_pad, pad_id
from ropedim.devices import input_device
from ropedim.hooks import BeforeRoPE
from ropedim.progress import progress
from ropedim.prompts import Prompt, encode

__all__ = ["generate", "sweep", "model_fingerprint", "mask_digest", "MODES"]

MODES = ("faithful", "fast")
DECODE = "first-line-2"  # the stop rule and what is stored (text and token ids); in every key
_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- identities for the cache key
def _unwrap(loaded, tokenizer) -> tuple[torch.nn.Module, Any, str]:
    """A model, or a ``ropedim.models.Loaded`` (whose tokenizer is used when ``tokenizer``
    is None), with its fingerprint."""
    if isinstance(loaded, torch.nn.Module):
        model = loaded
    else:
        model = loaded.model
        tokenizer = tokenizer if tokenizer is not None else loaded.tokenizer
    if tokenizer is None:
        raise ValueError("no tokenizer given")
    return model, tokenizer, model_fingerprint(model)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Class, name and a hash of every parameter's bytes (computed once per model object)."""
    if model not in _FINGERPRINTS:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{type(model).__name__}:{getattr(model.config, 'name_or_path', '')}".encode())
        for name, p in model.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
        _FINGERPRINTS[model] = h.hexdigest()
    return _FINGERPRINTS[model]


def mask_digest(mask: Any) -> str | None:
    """A stable hash of a mask (tensor, array, or anything JSON-able / with ``digest()``)."""
    if mask is None:
        return None
    if isinstance(mask, BeforeRoPE):
        return "before-rope:" + mask_digest(mask.mask)
    if hasattr(mask, "digest") and callable(mask.digest):
        return str(mask.digest())
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().float().numpy()
    if isinstance(mask, np.ndarray):
        a = np.ascontiguousarray(mask, dtype=np.float32)
        return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:24]
    return hashlib.sha256(json.dumps(mask, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---------------------------------------------------------------- disk cache per prompt
def _spec(model, fp, text, max_new_tokens, mask, mode, extra=None) -> dict:
    dtype = str(next(model.parameters()).dtype)
    return {"model": type(model).__name__, "name": getattr(model.config, "name_or_path", ""),
            "weights": fp, "prompt": text, "max_new_tokens": max_new_tokens, "dtype": dtype,
            "mask": mask_digest(mask), "mode": mode, "extra": extra, "decode": DECODE}


def _load(spec, use) -> Answer | None:
    got = disk.load("generation", spec, suffix=".json") if use else None
    return None if got is None else Answer(got["answer"], got["ids"])


def _store(spec, answer: Answer, use) -> None:
    if use:
        disk.store("generation", spec, {"answer": str(answer), "ids": list(answer.ids)}, suffix=".json")


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

    bar = progress(total=len(batches), desc=desc, disable=all(done(b) for b in range(len(batches))))
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
             desc: str = "generate", intervention=None) -> list[Answer]:
    """Greedy answers to ``prompts``, each under ``masked(model, mask, from_position)`` and,
    where given, under ``intervention`` (a ``ropedim.logprob.Intervention``: its ``enter``
    hooks the model at every position; its ``spec`` is in each answer's cache key)."""
    model, tokenizer, fp = _unwrap(loaded_model, tokenizer)
    texts = [p.text if isinstance(p, Prompt) else p for p in prompts]
    extra = from_position if intervention is None else {"from": from_position, "intervention": intervention.spec}
    specs = [_spec(model, fp, t, max_new_tokens, mask, "faithful", extra) for t in texts]
    out = [None] * len(texts)
    longest = lambda: max(len(encode(t, tokenizer)[0]) for t in texts)
    batch_size = memory.generation_batch(model, batch_size, longest, max_new_tokens)  # GPU: planned, or an error
    batches = _batches(sorted(range(len(texts)), key=lambda i: len(texts[i])), batch_size)  # less padding

    def work(b, _names):
        batch = batches[b]
        ids, attn = left_pad([encode(texts[i], tokenizer)[0] for i in batch], pad_id(tokenizer), input_device(model))
        with (intervention.enter(model) if intervention is not None else contextlib.nullcontext()):
            answers = greedy(Padded(model, ids, attn, mask, from_position), tokenizer, eos_ids(model, tokenizer),
                             len(batch), max_new_tokens)
        for i, a in zip(batch, answers):
            _fill(out, specs, i, a, cache)

    _run(batches, {"": out}, {"": specs}, cache, work, desc)
    return out


def sweep(loaded_model, tokenizer, prompts: Sequence[Prompt], variants: Mapping[str, Any],
          mode: str = "faithful", max_new_tokens: int = 32, batch_size: int = 8,
          cache: bool = True) -> dict[str, list[Answer]]:
    """Answers to every prompt under every variant (name -> mask, ``BeforeRoPE`` mask or None).

    Both modes prefill the contexts along their prefix tree and decode the question and
    answer rows over the shared context (``ropedim.decode.SharedContext``). ``fast``: one
    unmasked prefill serves every variant (masks from the question on). ``faithful``: each
    masked variant prefills under its own mask (the mask at every position, the paper's);
    an unmasked variant is the same computation in both modes and shares its answers."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    model, tokenizer, fp = _unwrap(loaded_model, tokenizer)
    enc = [encode(p, tokenizer) for p in prompts]

    def spec(p, q, m):
        fast = mode == "fast" or m is None
        return _spec(model, fp, p.text, max_new_tokens, m, "fast" if fast else "faithful",
                     {"from": q, "attention": "shared"} if fast else {"attention": "shared"})

    specs = {name: [spec(p, q, m) for p, (_, q) in zip(prompts, enc)] for name, m in variants.items()}
    out = {name: [None] * len(prompts) for name in variants}
    batch_size = memory.sweep_batch(model, batch_size, max(q for _, q in enc),
                                    max(len(ids) - q for ids, q in enc) + max_new_tokens, len(variants))
    # contexts sharing a prefix side by side
    batches = _batches(sorted(range(len(prompts)), key=lambda i: enc[i][0][:enc[i][1]]), batch_size)
    pad, eos = pad_id(tokenizer), eos_ids(model, tokenizer)
    shape = mask_shape(model)

    def decode(batch, names, faithful: bool):
        """Answers [len(batch) * len(names)] (row j * V + v), one shared prefill (``faithful``:
        under the only variant's mask)."""
        dev = input_device(model)
        plain = [variants[v].mask if isinstance(variants[v], BeforeRoPE) else variants[v] for v in names]
        masks = torch.stack([torch.ones(shape, device=dev) if m is None else torch.as_tensor(m, device=dev).float()
                             for m in plain])
        before = torch.tensor([isinstance(variants[v], BeforeRoPE) for v in names], device=dev)
        q_ids, q_mask = left_pad([enc[i][0][enc[i][1]:] for i in batch], pad, dev)
        with torch.inference_mode():
            decoder = SharedContext(model, [enc[i][0][:enc[i][1]] for i in batch], q_ids, q_mask, masks,
                                    max_new_tokens, before, masked_prefill=faithful)
        return greedy(decoder, tokenizer, eos, len(batch) * len(names), max_new_tokens)

    def work(b, names):
        batch = batches[b]
        shared = [v for v in names if mode == "fast" or variants[v] is None]
        groups = ([shared] if shared else []) + [[v] for v in names if v not in shared]
        for group in groups:
            answers = decode(batch, group, faithful=group is not shared)
            for j, i in enumerate(batch):
                for v, name in enumerate(group):
                    _fill(out[name], specs[name], i, answers[j * len(group) + v], cache)

    _run(batches, out, specs, cache, work, f"sweep[{mode}]")
    return out
