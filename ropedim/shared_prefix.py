"""Attention for many continuations of one context: the fast masked sweep (§5.4).

Contexts are prefilled along their prefix tree (:func:`prefill`): a prefix shared by several
contexts (the instruction; the documents before the gold one, which move with it) is
computed once. A batch of B contexts (instruction + documents) is prefilled once, unmasked. Each context
then continues in V rows, one per mask variant: row r = b * V + v. In every layer a row's
keys are the shared prefix of its context followed by its own suffix (question and answer
tokens). The prefix is read once for all V rows of a context (its queries are folded into
one matrix product per KV head), the suffix per row, and the two softmax parts are merged
with their maxima and sums, so the result equals attention over the concatenation.

Keys are masked by absolute position, never by index: causal (key position <= query
position), padding (position -1) and Gemma's sliding window (q_pos - k_pos < window). So
padded batches are exact also for sliding-window layers.

Shapes: B contexts, V variants, R live rows (<= B * V), H query heads, KVH key/value heads,
G = H // KVH, Tc prefix keys, Ts suffix keys, S new queries, Dh head dim, L layers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Iterator, Sequence

import torch
from torch import nn

from .anatomy import attention_modules
from .devices import input_device
from .attention import merge_lse, position_bias, sdpa_with_lse
from .hooks import kernel

__all__ = ["SharedPrefix", "attend", "attending", "prefill", "trie"]


@dataclass
class SharedPrefix:
    keys: list[torch.Tensor]  # per layer [B, KVH, Tc, Dh], post-RoPE
    values: list[torch.Tensor]  # per layer [B, KVH, Tc, Dh]
    prefix_pos: torch.Tensor  # [B, Tc] key positions, -1 = padding
    n_variants: int  # V (row r continues context r // V under variant r % V)
    rows: torch.Tensor  # [R] live rows, ids into B * V
    suffix_pos: torch.Tensor  # [R, Ts] suffix key positions (-1 = padding); the last S are the queries'
    causal_suffix: bool = False  # the suffix is the queries themselves, right-padded: causal by index
    capacity: int = 0  # suffix tokens the buffers hold (at least the first call's)
    suffix_k: list = field(default_factory=list)  # per layer [R, KVH, capacity, Dh], filled lazily
    suffix_v: list = field(default_factory=list)
    suffix_len: list = field(default_factory=list)  # per layer: suffix tokens stored

    def store(self, layer: int, key: torch.Tensor, value: torch.Tensor):
        """Append the new tokens' keys and values [R, KVH, S, Dh] of ``layer`` in place (no
        cache concatenation per step); return the whole suffix's."""
        if not self.suffix_k:
            n = len(self.keys)
            self.suffix_k, self.suffix_v, self.suffix_len = [None] * n, [None] * n, [0] * n
        if self.suffix_k[layer] is None:
            shape = (*key.shape[:2], max(self.capacity, key.shape[2]), key.shape[3])
            self.suffix_k[layer], self.suffix_v[layer] = key.new_zeros(shape), value.new_zeros(shape)
        n0, n1 = self.suffix_len[layer], self.suffix_len[layer] + key.shape[2]
        self.suffix_k[layer][:, :, n0:n1] = key
        self.suffix_v[layer][:, :, n0:n1] = value
        self.suffix_len[layer] = n1
        return self.suffix_k[layer][:, :, :n1], self.suffix_v[layer][:, :, :n1]

    def keep(self, idx: torch.Tensor) -> None:
        """Only the live rows at ``idx`` go on decoding. Once half the contexts have no live
        row, they are dropped (their keys and values are not read again)."""
        self.rows, self.suffix_pos = self.rows[idx], self.suffix_pos[idx]
        self.suffix_k = [None if x is None else x[idx] for x in self.suffix_k]
        self.suffix_v = [None if x is None else x[idx] for x in self.suffix_v]
        ctx = self.rows // self.n_variants
        live = torch.unique(ctx)
        if len(live) <= self.prefix_pos.shape[0] // 2:
            self.keys = [k[live] for k in self.keys]
            self.values = [v[live] for v in self.values]
            self.prefix_pos = self.prefix_pos[live]
            self.rows = torch.searchsorted(live, ctx) * self.n_variants + self.rows % self.n_variants

    def append(self, pos: torch.Tensor) -> None:
        """Positions [R, S] of the tokens fed next."""
        self.suffix_pos = torch.cat([self.suffix_pos, pos], dim=1)


def attend(module: nn.Module, query, key, value, attention_mask, scaling=None,
           sliding_window=None, *, state: SharedPrefix, layer: int, **kwargs):
    """An attention kernel (transformers 5's interface) over ``state``: query [R, H, S, Dh]
    post-RoPE (any query mask already applied by ``ropedim.hooks.masked``); key, value
    [R, KVH, S, Dh] the new tokens' (the model runs without a cache: ``state`` keeps the
    suffix). Scores, softmax statistics and their merge are float32 (``sdpa_with_lse``);
    the output has the query's dtype and device (a model split over devices: the layer's)."""
    st = state
    if getattr(module.config, "attn_logit_softcapping", None):
        raise NotImplementedError("shared-prefix attention has no logit soft-capping")
    key, value = st.store(layer, key, value)
    r, h, s, dh = query.shape
    kvh = key.shape[1]
    g, n_ctx, n_var = h // kvh, st.keys[layer].shape[0], st.n_variants
    scaling = dh ** -0.5 if scaling is None else scaling
    dev = query.device
    rows, q_pos, prefix_pos = st.rows.to(dev), st.suffix_pos[:, -s:].to(dev), st.prefix_pos.to(dev)  # [R], [R, S], [B, Tc]

    # prefix: the V rows of a context, G query heads each, read its KV heads once
    full = query.new_zeros(n_ctx * n_var, h, s, dh)
    full[rows] = query
    qf = full.view(n_ctx, n_var, kvh, g, s, dh).transpose(1, 2)  # [B, KVH, V, G, S, Dh]
    if sliding_window is None:  # every prefix key precedes every query: only padding hides one
        bias = position_bias(prefix_pos.new_full((n_ctx, 1), 2 ** 62), prefix_pos).view(n_ctx, 1, 1, 1, 1, -1)
    else:
        pos = q_pos.new_full((n_ctx * n_var, s), -1)
        pos[rows] = q_pos
        bias = position_bias(pos.view(n_ctx, n_var, s), prefix_pos[:, None], sliding_window)[:, None, :, None]
    o1, lse1 = (x.transpose(1, 2).reshape(n_ctx * n_var, h, s, -1)[rows]  # [R, H, S, d]
                for x in sdpa_with_lse(qf, st.keys[layer], st.values[layer], bias, scale=scaling))

    # suffix: per row
    qs = query.view(r, kvh, g, s, dh)
    if st.causal_suffix and sliding_window is None:
        o2, lse2 = sdpa_with_lse(qs, key, value, causal=True, scale=scaling)
    else:
        bias = position_bias(q_pos, st.suffix_pos.to(dev), sliding_window)[:, None, None]  # [R, 1, 1, S, Ts]
        o2, lse2 = sdpa_with_lse(qs, key, value, bias, scale=scaling)

    out = merge_lse(o1, lse1, o2.view(r, h, s, -1), lse2.view(r, h, s, 1))  # pads: 0
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


@contextmanager
def attending(model: nn.Module, state: SharedPrefix) -> Iterator[None]:
    """The model's attention runs :func:`attend` over ``state`` (``ropedim.hooks.kernel``:
    hooks such as query masks still apply); always restored."""
    with kernel(model, lambda layer: partial(attend, state=state, layer=layer)):
        yield


# ---------------------------------------------------------------- prefilling a prefix tree

@dataclass
class Node:
    parent: int  # index of the parent node, -1 for a root
    tokens: list[int]
    start: int  # position of the first token


def trie(seqs: Sequence[Sequence[int]]) -> tuple[list[Node], list[int]]:
    """The compacted prefix tree of non-empty token sequences: nodes (each parent before its
    children) and the node each sequence ends at."""
    if any(len(x) == 0 for x in seqs):
        raise ValueError("empty context: nothing to prefill")
    nodes: list[Node] = []
    leaf = [-1] * len(seqs)

    def grow(members, depth, parent):
        groups: dict[int, list[int]] = {}
        for i in members:
            if len(seqs[i]) == depth:
                leaf[i] = parent
            else:
                groups.setdefault(seqs[i][depth], []).append(i)
        for g in groups.values():
            first, end, n = seqs[g[0]], depth + 1, min(len(seqs[i]) for i in g)
            while end < n and all(seqs[i][end] == first[end] for i in g):
                end += 1
            nodes.append(Node(parent, list(first[depth:end]), depth))
            grow(g, end, len(nodes) - 1)

    grow(range(len(seqs)), 0, -1)
    return nodes, leaf


def _pad(parts: list[torch.Tensor], dim: int, left: bool = True) -> torch.Tensor:
    """Stack tensors padded with zeros along ``dim`` to one length."""
    n = max(x.shape[dim] for x in parts)
    out = []
    for x in parts:
        z = x.new_zeros([n - x.shape[d] if d == dim else x.shape[d] for d in range(x.dim())])
        out.append(torch.cat([z, x] if left else [x, z], dim=dim))
    return torch.stack(out)


def _groups(nodes: list[Node], depth: list[int], waste: float = 0.15):
    """(level, node ids) batches: a level's nodes by length, split where right-padding would
    add more than ``waste`` of the batch's tokens."""
    for level in range(max(depth) + 1):
        ids = sorted((i for i in range(len(nodes)) if depth[i] == level), key=lambda i: -len(nodes[i].tokens))
        group, total = [], 0
        for i in ids:
            n = len(nodes[i].tokens)
            if group and (len(group) + 1) * len(nodes[group[0]].tokens) > (1 + waste) * (total + n):
                yield level, group
                group, total = [], 0
            group.append(i)
            total += n
        yield level, group


@torch.inference_mode()
def prefill(model: nn.Module, seqs: Sequence[Sequence[int]]):
    """Keys and values [B, KVH, T, Dh] per layer and key positions [B, T] (-1 = left pad) of
    each sequence, every shared prefix computed once: the nodes of :func:`trie` level by
    level, each node attending to its parent's path (the prefix) and, causally, to itself
    (the suffix, right-padded)."""
    nodes, leaf = trie(seqs)
    attns = attention_modules(model)
    dev = input_device(model)
    seg_k, seg_v = [None] * len(nodes), [None] * len(nodes)  # per node: per layer [KVH, S, Dh]
    depth: list[int] = []
    for nd in nodes:
        depth.append(0 if nd.parent < 0 else depth[nd.parent] + 1)

    def gather(ids):  # each node's whole path: keys, values [B, KVH, T, Dh] per layer, positions
        paths = []
        for i in ids:
            p = []
            while i >= 0:
                p, i = [i] + p, nodes[i].parent
            paths.append(p)
        kv = [[_pad([torch.cat([seg[j][la] for j in p], 1) for p in paths], 1) for la in range(len(attns))]
              for seg in (seg_k, seg_v)]
        ends = [nodes[p[-1]].start + len(nodes[p[-1]].tokens) for p in paths]
        n = max(ends)
        return kv[0], kv[1], torch.stack([torch.arange(n, device=dev) - (n - e) for e in ends]).clamp(min=-1)

    for level, ids in _groups(nodes, depth):
        tok = [torch.tensor(nodes[i].tokens, device=dev) for i in ids]
        if level == 0:  # no prefix: one key that nobody sees (on each layer's device)
            ks = [torch.zeros(len(ids), model.config.num_key_value_heads, 1, a.head_dim, dtype=model.dtype,
                              device=next(a.parameters()).device) for a in attns]
            vs, pre_pos = ks, torch.full((len(ids), 1), -1, device=dev)
        else:
            ks, vs, pre_pos = gather([nodes[i].parent for i in ids])
        pos = _pad([torch.arange(len(t), device=dev) + nodes[i].start + 1 for t, i in zip(tok, ids)], 0, left=False) - 1
        st = SharedPrefix(ks, vs, pre_pos, 1, torch.arange(len(ids), device=dev), pos, causal_suffix=True)
        with attending(model, st):
            model(input_ids=_pad(tok, 0, left=False), position_ids=pos.clamp(min=0), use_cache=False,
                  logits_to_keep=1)
        for j, i in enumerate(ids):
            n = len(tok[j])
            seg_k[i] = [k[j, :, :n] for k in st.suffix_k]
            seg_v[i] = [v[j, :, :n] for v in st.suffix_v]
    return gather(leaf)
