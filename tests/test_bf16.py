"""bfloat16, the GPU default, against float32 on the tiny config of every architecture
(llama3 θ scaling, Qwen 2's q/k/v biases, OLMo 2's q/k norm over the whole projection,
Gemma 3's sliding window and two bases, Phi's partial rotary), on the CPU.

The bf16 model is the float32 one rounded (same seed). Its arithmetic differs, ropedim's
does not: scores, softmax statistics, log-sum-exp merges, Eq. 4 and every statistic stay
float32. Stated tolerances, each with what was measured when it was set:

- logits of the prompts: |Δ| <= ``LOGIT_TOL`` × the largest |logit| (measured <= 0.04);
- the answers' tokens: decoding the float32 model's greedy tokens with the bf16 model
  through ropedim's own decoders (fast sweep and faithful, under a query mask), the bf16
  model picks the same token at >= ``TOKEN_AGREEMENT`` of the steps (measured 0.95-1; a
  random-init model has many near-ties, a trained one few);
- retrieval scores: |Δ| <= ``RETRIEVAL_TOL`` (measured <= 0.0005); utility scores (Eq. 4
  run to convergence): mean |Δu| <= ``UTILITY_MEAN_TOL``, max <= ``UTILITY_MAX_TOL``
  (measured <= 0.0034 and 0.040);
- verdict inputs: the retrieval heads over the threshold and every mask the claims use are
  the same, except at heads / dims within the tolerance of the threshold (no head here,
  and at most ``NEAR_SHARE`` of the dims: measured up to 7 % for tiny-gemma3, none
  changing side).
"""

from __future__ import annotations

import pytest
import torch

from claims.table import qa_plan
from ropedim.decode import Padded, SharedContext, left_pad, pad_id
from ropedim.hooks import BeforeRoPE
from ropedim.models import TINY_MODELS, load
from ropedim.prompts import build_prompts, encode
from ropedim.qa.analysis import HeadScores, capture_example
from ropedim.qa.masks import LowUtility, RetrievalHeadDims
from ropedim.qa_data import Doc, Example
from ropedim.retrieval import average_scores, retrieval_heads, retrieval_scores
from ropedim.utility import UtilityConfig, prepare, utility_scores

pytestmark = pytest.mark.usefixtures("one_thread")

LOGIT_TOL = 0.05
TOKEN_AGREEMENT = 0.85
RETRIEVAL_TOL = 0.01
UTILITY_MEAN_TOL, UTILITY_MAX_TOL = 0.01, 0.05
NEAR_SHARE = 0.1
N_NEW = 8
UTILITY = UtilityConfig()  # the pipeline's: Adam until each head converges (<= 500 steps)


def _prompts(n=4):
    exs = []
    for i in range(n):
        docs = tuple(Doc(f"t{j}", "word " * (j + i % 3) + f"fact {j}", j == i % 3) for j in range(3))
        exs.append(Example(str(i), "which fact" + "?" * i, ("fact",), docs, i % 3))
    return build_prompts(exs, "plain")


@pytest.fixture(scope="module", params=TINY_MODELS)
def pair(request):
    return load(request.param), load(request.param, dtype=torch.bfloat16)


def _mask(loaded) -> torch.Tensor:
    a = loaded.anatomy
    m = torch.ones(a.n_layers, a.n_heads, a.head_dim)
    m[:, :, : a.head_dim // 4] = 0
    return m


def test_the_model_is_bf16_and_its_statistics_float32(pair):
    _, b = pair
    assert {p.dtype for p in b.model.parameters()} == {torch.bfloat16}
    ex = capture_example(b, _prompts(1)[0], "fact 0")
    assert ex.capture[0].k.dtype == torch.bfloat16  # captures keep the model's dtype (lossless)
    assert retrieval_scores(ex.capture, None, ex.context).dtype == torch.float32
    prepared = prepare(dict(ex.capture), UTILITY)
    assert prepared.qa.dtype == prepared.target.dtype == torch.float32
    assert utility_scores([prepared], UtilityConfig(max_steps=2)).u.dtype == torch.float32


def test_logits_agree(pair):
    f, b = pair
    for p in _prompts():
        ids = torch.tensor([encode(p, f.tokenizer)[0]])
        with torch.inference_mode():
            lf, lb = f.model(ids).logits.float(), b.model(ids).logits.float()
        assert (lf - lb).abs().max() <= LOGIT_TOL * lf.abs().max()


def _decode(decoder, n: int, forced: torch.Tensor | None = None) -> torch.Tensor:
    """[R, n] greedy tokens of ``decoder``, fed ``forced`` (teacher forcing) when given."""
    out = [decoder.first()]
    for j in range(n - 1):
        out.append(decoder.next(out[-1] if forced is None else forced[:, j]))
    return torch.stack(out, 1)


def _fast(loaded, prompts, masks):
    enc = [encode(p, loaded.tokenizer) for p in prompts]
    q_ids, q_mask = left_pad([ids[q:] for ids, q in enc], pad_id(loaded.tokenizer))
    return SharedContext(loaded.model, [ids[:q] for ids, q in enc], q_ids, q_mask, masks, N_NEW)


def _faithful(loaded, prompts, mask):
    ids, attn = left_pad([encode(p, loaded.tokenizer)[0] for p in prompts], pad_id(loaded.tokenizer))
    return Padded(loaded.model, ids, attn, mask)


def test_answer_tokens_agree_through_ropedims_decoders(pair):
    f, b = pair
    ps, m = _prompts(), _mask(f)
    masks = torch.stack([torch.ones_like(m), m])  # unmasked and masked rows, side by side
    with torch.inference_mode():
        for make in (lambda lm: _fast(lm, ps, masks), lambda lm: _faithful(lm, ps, m)):
            tokens = _decode(make(f), N_NEW)
            agree = (_decode(make(b), N_NEW, tokens) == tokens).float().mean().item()
            assert agree >= TOKEN_AGREEMENT, agree


def _scores(loaded, prompts, answers) -> HeadScores:
    """Retrieval scores and Eq. 4 summed over every row, u after RoPE (the post-rope reading)."""
    exs = [capture_example(loaded, p, a) for p, a in zip(prompts, answers)]
    per = [retrieval_scores(e.capture, None, e.context, bos_index=e.bos_index) for e in exs]
    u = utility_scores([prepare(dict(e.capture), UTILITY) for e in exs], UTILITY)
    ret = average_scores(per)
    return HeadScores(ret, torch.stack(per), ret, u.u, u.converged, u.error, len(exs), "post-rope")


def test_scores_and_verdict_inputs_agree(pair):
    f, b = pair
    ps = _prompts()
    answers = ["fact 0", "fact 1 is it", "", "word fact 2"]  # the same tokens for both models
    sf, sb = _scores(f, ps, answers), _scores(b, ps, answers)
    assert (sf.retrieval - sb.retrieval).abs().max() <= RETRIEVAL_TOL
    du = (sf.utility - sb.utility).abs()
    assert du.mean() <= UTILITY_MEAN_TOL and du.max() <= UTILITY_MAX_TOL

    for mask in (m for ms in qa_plan().values() for m in ms):
        if isinstance(mask, RetrievalHeadDims):
            near = ((sf.retrieval - mask.retrieval_threshold).abs() <= RETRIEVAL_TOL)[..., None]
            far = set(retrieval_heads(sf.retrieval, mask.retrieval_threshold)) - {
                tuple(x) for x in near[..., 0].nonzero().tolist()}
            assert far <= set(mask.heads(sb))  # every clear retrieval head stays one
        elif isinstance(mask, LowUtility):
            near = (sf.utility - mask.threshold).abs() <= UTILITY_MAX_TOL
        else:
            raise AssertionError(f"no tolerance stated for mask {mask!r}")
        mf, mb = (getattr(m, "mask", m) for m in (mask.build(f.anatomy, sf), mask.build(b.anatomy, sb)))
        assert torch.equal(mf[~near.expand_as(mf)], mb[~near.expand_as(mb)]), mask.name
        assert near.float().mean() <= NEAR_SHARE, f"{mask.name}: too many heads / dims near the threshold to compare"


@pytest.mark.parametrize("alias, tiny", [("llama", "tiny-llama"), ("qwen", "tiny-qwen2"), ("olmo", "tiny-olmo2")])
def test_the_paper_aliases_in_bf16_with_their_prompts(alias, tiny, tmp_path, monkeypatch):
    """A paper alias from $ROPEDIM_MODELS (here its architecture's tiny config) in bf16:
    the App. B prompt of its family, both sweeps and a capture run; the fast sweep's
    answers keep the float32 model's tokens as above."""
    from ropedim.generation import sweep
    from ropedim.models import PAPER_MODELS
    from ropedim.qa_data import synthetic_task

    f = load(tiny)
    f.model.save_pretrained(tmp_path / PAPER_MODELS[alias].hf_id.split("/")[-1])
    f.tokenizer.save_pretrained(tmp_path / PAPER_MODELS[alias].hf_id.split("/")[-1])
    monkeypatch.setenv("ROPEDIM_MODELS", str(tmp_path))
    b = load(alias, dtype=torch.bfloat16)
    assert (b.kind, b.prompt_style) == ("paper", alias) and next(b.model.parameters()).dtype == torch.bfloat16
    ps = build_prompts(synthetic_task(2, 2, 0, seed=0), alias, b.tokenizer)
    m = _mask(b)
    for mode in ("fast", "faithful"):
        got = sweep(b, None, ps, {"none": None, "m": m}, mode, N_NEW, batch_size=2, cache=False)
        assert all(isinstance(x, str) for v in got.values() for x in v)
    assert capture_example(b, ps[0], "x").capture[0].q.dtype == torch.bfloat16
    with torch.inference_mode():
        masks = torch.stack([torch.ones_like(m), m])
        tokens = _decode(_fast(f, ps, masks), N_NEW)
        assert (_decode(_fast(b, ps, masks), N_NEW, tokens) == tokens).float().mean() >= TOKEN_AGREEMENT
