"""Retrieval-head indicator score (§5.3): our rows-only computation equals the plain one
(an eager forward with ``output_attentions=True``, summing the same rows) on tiny models."""

from __future__ import annotations

import pytest
import torch

from ropedim.capture import LayerCapture
from ropedim.hooks import capture
from ropedim.models import load
from ropedim.retrieval import (attention_rows, average_scores, retrieval_heads,
                               retrieval_scores)

CTX, Q0, T = (1, 20), 20, 32  # context keys [1, 20) after BOS; question+output from 20


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gemma3"])  # GQA; sliding window
def run(request):
    """Captures of the question+output rows and the model's own attention weights."""
    model = load(request.param, attn_implementation="eager").model
    ids = torch.randint(3, 259, (2, T), generator=torch.Generator().manual_seed(0))
    q_pos = torch.arange(Q0, T)
    with torch.no_grad(), capture(model, positions=q_pos, keep=("q", "k", "v")) as cap:
        out = model(ids, output_attentions=True, use_cache=False)
    return cap, q_pos, [a.float() for a in out.attentions]  # [B, H, T, T] per layer


def test_attention_rows_equal_model_weights(run):
    cap, q_pos, atts = run
    for layer, a in enumerate(atts):
        e = cap[layer]
        w = attention_rows(e.q, e.k, q_pos, e.scaling, e.window, chunk=5)
        torch.testing.assert_close(w, a[:, :, q_pos], atol=1e-5, rtol=1e-4)


def test_scores_equal_plain_baseline(run):
    cap, q_pos, atts = run
    s = retrieval_scores(cap, None, CTX, bos_index=0)  # q_pos from the capture
    # the plain way: full T x T weights, rows of the question+output, context minus BOS
    ref = torch.stack([a[:, :, q_pos, CTX[0]:CTX[1]].sum(-1).mean((0, 2)) for a in atts])
    torch.testing.assert_close(s, ref, atol=1e-5, rtol=1e-4)
    # a span that includes the BOS key subtracts its weight
    s0 = retrieval_scores(cap, q_pos, (0, CTX[1]), bos_index=0)
    torch.testing.assert_close(s0, s, atol=1e-5, rtol=1e-4)
    # renormalised: divided by the weight left after removing BOS, row by row
    sr = retrieval_scores(cap, q_pos, CTX, bos_index=0, renormalize=True)
    rr = torch.stack([(a[:, :, q_pos, CTX[0]:CTX[1]].sum(-1) / (1 - a[:, :, q_pos, 0])).mean((0, 2))
                      for a in atts])
    torch.testing.assert_close(sr, rr, atol=1e-5, rtol=1e-4)
    assert s.shape == (len(atts), atts[0].shape[1]) and bool(((s >= 0) & (s <= 1)).all())


def test_full_rows_and_chunking_agree(run):
    """q captured at every position is restricted to q_pos; the chunk size changes nothing."""
    cap, q_pos, _ = run
    e = cap[0]
    full_q = torch.zeros(*e.q.shape[:2], T, e.q.shape[-1])
    full_q[:, :, q_pos] = e.q
    a = attention_rows(full_q, e.k, q_pos, e.scaling, e.window, chunk=1)
    b = attention_rows(e.q, e.k, q_pos, e.scaling, e.window)
    torch.testing.assert_close(a, b)


def _planted():
    """Head 0 looks only at a context key, head 1 only at BOS, head 2 only at itself."""
    T, Dh, big = 12, 4, 50.0
    k = torch.zeros(1, 1, T, Dh)
    k[0, 0, 0, 0] = 1.0  # BOS
    k[0, 0, 3, 1] = 1.0  # a context key
    k[0, 0, 8:, 2] = 1.0  # the question+output part
    q = torch.zeros(1, 3, 4, Dh)
    q[0, 0, :, 1], q[0, 1, :, 0], q[0, 2, :, 2] = big, big, big
    v = torch.randn(1, 1, T, Dh)
    return [LayerCapture(q=q, k=k, v=v, scaling=1.0, window=None)], torch.arange(8, 12)


def test_planted_heads_and_threshold():
    caps, q_pos = _planted()
    s = retrieval_scores(caps, q_pos, (0, 8), bos_index=0)
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    assert retrieval_heads(s, 0.5) == [(0, 0)]
    # BOS kept in the sum when bos_index is None
    assert retrieval_scores(caps, q_pos, (0, 8), bos_index=None)[0, 1] > 0.99
    avg = average_scores([s, torch.zeros_like(s)])
    torch.testing.assert_close(avg, s / 2)
