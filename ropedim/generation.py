"""Greedy answers to QA prompts, with and without masked query dimensions (§5.2, §5.4).

The paper masks query dimensions "and prompt[s] the model to answer the same questions
again". Decoding is greedy (Liu et al. use temperature 0), at most ``max_new_tokens`` (32)
new tokens, stopping at EOS or at a newline once some text was produced (Liu et al. score
only the first line). Prompts are batched with left padding; position ids come from the
attention mask, so padding never shifts RoPE positions.

Masks are applied by ``ropedim.hooks.masked(model, mask, from_position=None)``. ``sweep``
runs several mask variants over the same prompts:

- ``faithful``: each variant is a full generation, the mask on at every position;
- ``fast``: the context (instruction + documents) is prefilled once, unmasked, and each
  variant continues from a fork of that KV cache with the mask on, from the question start
  to the end of the answer. This equals masking from the question start (a query mask at
  positions >= t changes no key or value before t), not ``faithful``.

Every answer is cached on disk per prompt, keyed by model and weights, prompt text,
max_new_tokens, dtype, mask and mode (``ropedim.cache``). The batch size is not in the key:
padding only changes float rounding.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import weakref
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ropedim import cache as disk
from ropedim.prompts import Prompt, _adds_bos, tokenize_prompt

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


def _masker():  # imported lazily: hooks.py is written separately
    from ropedim.hooks import masked
    return masked


def _masking(model, mask, from_position=None):
    if mask is None:
        return contextlib.nullcontext()
    return _masker()(model, mask, from_position=from_position)


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


@torch.inference_mode()
def _forward(model, ids, mask, past, n_new):
    """Run ``ids`` (the last ``n_new`` columns of ``mask``) on top of ``past``."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -n_new:]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float().argmax(-1), out.past_key_values


@torch.inference_mode()
def _greedy(model, tokenizer, ids, mask, past, max_new_tokens: int) -> list[str]:
    """Greedy continuation of a left-padded batch; ``mask`` covers past and new tokens."""
    eos = _eos_ids(model, tokenizer)
    nxt, past = _forward(model, ids, mask, past, ids.shape[1])
    gen: list[list[int]] = [[] for _ in range(ids.shape[0])]
    rows = list(range(ids.shape[0]))  # the batch rows still decoding
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
            past.batch_select_indices(keep)
            mask, nxt, rows = mask[keep], nxt[keep], [rows[j] for j in alive]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        nxt, past = _forward(model, nxt[:, None], mask, past, 1)
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


# ---------------------------------------------------------------- public API
def generate(loaded_model, tokenizer, prompts: Sequence[str | Prompt], max_new_tokens: int = 32,
             batch_size: int = 8, mask=None, from_position: int | None = None, cache: bool = True,
             desc: str = "generate") -> list[str]:
    """Greedy answers to ``prompts``, each under ``masked(model, mask, from_position)``."""
    model, tokenizer, fp = _unwrap(loaded_model, tokenizer)
    texts = [p.text if isinstance(p, Prompt) else p for p in prompts]
    specs = [_spec(model, fp, t, max_new_tokens, mask, "faithful", from_position) for t in texts]
    out = [_load(s, cache) for s in specs]
    todo = [i for i, o in enumerate(out) if o is None]
    todo.sort(key=lambda i: len(texts[i]))  # similar lengths together: less padding
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not batches):
        ids, attn = _left_pad([_encode(texts[i], tokenizer)[0] for i in batch], _pad_id(tokenizer))
        with _masking(model, mask, from_position):
            answers = _greedy(model, tokenizer, ids, attn, None, max_new_tokens)
        for i, a in zip(batch, answers):
            out[i] = a
            _store(specs[i], a, cache)
    return out


def _fork(past):
    """An independent copy of a DynamicCache sharing the prefix tensors (updates concatenate,
    never write in place); any other cache type is deep-copied."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
    layers = getattr(past, "layers", None)
    if layers is None or any(type(la) not in (DynamicLayer, DynamicSlidingWindowLayer) for la in layers):
        return copy.deepcopy(past)
    new = copy.copy(past)
    new.layers = [copy.copy(la) for la in layers]
    return new


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
    specs = {name: [_spec(model, fp, p.text, max_new_tokens, m, "fast", q)
                    for p, (_, q) in zip(prompts, enc)] for name, m in variants.items()}
    out = {name: [_load(s, cache) for s in specs[name]] for name in variants}
    todo = [i for i in range(len(prompts)) if any(out[v][i] is None for v in variants)]
    todo.sort(key=lambda i: enc[i][1])
    pad = _pad_id(tokenizer)
    for start in tqdm(range(0, len(todo), batch_size), desc="sweep[fast]", disable=not todo):
        batch = todo[start:start + batch_size]
        pre_ids, pre_mask = _left_pad([enc[i][0][:enc[i][1]] for i in batch], pad)
        with torch.inference_mode():  # the shared context, unmasked, once
            past = model(input_ids=pre_ids, attention_mask=pre_mask, use_cache=True,
                         position_ids=(pre_mask.cumsum(-1) - 1).clamp(min=0),
                         logits_to_keep=1).past_key_values
        q_ids, q_mask = _left_pad([enc[i][0][enc[i][1]:] for i in batch], pad)
        for name, m in variants.items():
            if all(out[name][i] is not None for i in batch):
                continue
            with _masking(model, m, None):  # every position fed from here on is >= question start
                answers = _greedy(model, tokenizer, q_ids, torch.cat([pre_mask, q_mask], 1),
                                  _fork(past), max_new_tokens)
            for i, a in zip(batch, answers):
                out[name][i] = a
                _store(specs[name][i], a, cache)
    return out
