"""The GPU path on a GPU: ``pytest -m gpu`` (collected everywhere; skipped with a reason
where CUDA is absent). Tiny configs in bfloat16 on CUDA against float32 on the CPU (the
tolerances of tests/test_bf16.py), the shared-context kernel, placement, memory plans,
a model split over two GPUs, and smollm2."""

from __future__ import annotations

import pytest
import torch

from ropedim import devices, memory
from ropedim.attention import sdpa_with_lse
from ropedim.models import TINY_MODELS, load, load_cached

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: no CUDA device is visible here (run `pytest -m gpu` where one is)"),
]


def _bf16():
    import test_bf16  # tests/ is on sys.path under pytest (rootdir-relative imports)
    return test_bf16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_on_cuda_equals_the_cpu(dtype, causal):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 2, 3, 40, 16, generator=g).to(dtype)
    k, v = (torch.randn(3, 2, 40, 16, generator=g).to(dtype) for _ in range(2))
    bias = None if causal else torch.where(torch.rand(3, 1, 1, 1, 40, 40, generator=g) < 0.2, float("-inf"), 0.0)
    cpu = sdpa_with_lse(q, k, v, bias, causal=causal, scale=0.25)
    gpu = sdpa_with_lse(q.cuda(), k.cuda(), v.cuda(), None if causal else bias.cuda(), causal=causal, scale=0.25)
    for a, b in zip(cpu, gpu):
        assert b.dtype == torch.float32 and b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-4)  # TF32 may be on for float32 matmuls


@pytest.fixture(scope="module", params=TINY_MODELS)
def pair(request):
    """The float32 model on the CPU and the same weights in bfloat16 on this process's GPU."""
    gpu = load(request.param)  # device and dtype by default: cuda, bfloat16
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).dtype == torch.bfloat16
    return load(request.param, device="cpu"), gpu


def test_tiny_models_answer_on_the_gpu_as_on_the_cpu(pair):
    t, (f, b) = _bf16(), pair
    ps, m = t._prompts(), t._mask(f)
    masks = torch.stack([torch.ones_like(m), m])
    with torch.inference_mode():
        for make in (lambda lm: t._fast(lm, ps, masks), lambda lm: t._faithful(lm, ps, m)):
            tokens = t._decode(make(f), t.N_NEW)
            got = t._decode(make(b), t.N_NEW, tokens.to(b.device))
            assert got.device.type == "cuda"
            assert (got.cpu() == tokens).float().mean() >= t.TOKEN_AGREEMENT


def test_scores_on_the_gpu_agree_with_the_cpu(pair):
    t, (f, b) = _bf16(), pair
    ps, answers = t._prompts(), ["fact 0", "fact 1 is it", "", "word fact 2"]
    sf, sb = t._scores(f, ps, answers), t._scores(b, ps, answers)
    assert sb.retrieval.device.type == sb.utility.device.type == "cpu"  # results come back to the CPU
    assert (sf.retrieval - sb.retrieval).abs().max() <= t.RETRIEVAL_TOL
    du = (sf.utility - sb.utility).abs()
    assert du.mean() <= t.UTILITY_MEAN_TOL and du.max() <= t.UTILITY_MAX_TOL


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_prefill_on_the_gpu_equals_a_forward_pass(name):
    from transformers import DynamicCache

    from ropedim.shared_prefix import prefill

    model = load_cached(name).model
    g = torch.Generator().manual_seed(1)
    base = torch.randint(3, 200, (40,), generator=g).tolist()
    seqs = [base[:30] + [5, 6], base[:30] + [7] * 9, base[:12]]
    keys, values, pos = prefill(model, seqs)
    assert pos.device.type == keys[0].device.type == "cuda"
    for i, s in enumerate(seqs):
        cache = DynamicCache()
        with torch.inference_mode():
            model(input_ids=torch.tensor([s], device="cuda"), past_key_values=cache, use_cache=True)
        for layer, la in enumerate(cache.layers):
            torch.testing.assert_close(keys[layer][i, :, pos.shape[1] - len(s):], la.keys[0], rtol=0.05, atol=0.05)


def test_each_worker_takes_its_own_gpu(monkeypatch):
    n = torch.cuda.device_count()
    for w in range(2 * n):
        env = {"PYTEST_XDIST_WORKER": f"gw{w}", "PYTEST_XDIST_WORKER_COUNT": str(2 * n)}
        assert devices.current(env=env).device == torch.device(f"cuda:{w % n}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n - 1}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(n))
    assert load("tiny-llama").device == torch.device(f"cuda:{n - 1}")


def test_the_memory_plan_bounds_what_generation_uses():
    from ropedim.generation import generate

    lm = load_cached("tiny-llama")
    ps = ["x " * 200] * 16
    fp = memory.footprint(lm.model.config, torch.bfloat16)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()  # the weights and whatever earlier tests left
    torch.cuda.reset_peak_memory_stats()
    generate(lm, None, ps, 16, batch_size=16, cache=False)  # one batch of 16 on a GPU
    planned = 16 * fp.sequence(len(lm.tokenizer(ps[0])["input_ids"]) + 1, 16)
    assert torch.cuda.max_memory_allocated() - base <= planned + (64 << 20)  # + cuBLAS workspace


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs for device_map='auto'")
def test_a_model_split_over_two_gpus(tmp_path, monkeypatch):
    t = _bf16()
    tiny = load("tiny-llama", device="cpu")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    from ropedim.models.hf import weight_bytes

    # GPUs as large as the weights: FIT of one holds 70 % of them, so the model takes two
    monkeypatch.setattr(devices, "gpu_memory", lambda n=None: weight_bytes(tiny.model.config, torch.bfloat16))
    split = load(str(tmp_path))
    assert len(set(split.model.hf_device_map.values())) == 2
    ps, m = t._prompts(), t._mask(tiny)
    with torch.inference_mode():
        tokens = t._decode(t._fast(tiny, ps, torch.stack([torch.ones_like(m), m])), t.N_NEW)
        got = t._decode(t._fast(split, ps, torch.stack([torch.ones_like(m), m])), t.N_NEW, tokens.to(split.device))
    assert (got.cpu() == tokens).float().mean() >= t.TOKEN_AGREEMENT


def test_smollm2_answers_on_the_gpu():
    from ropedim.generation import sweep
    from ropedim.metrics import best_subspan_em
    from ropedim.models import ModelUnavailable
    from ropedim.prompts import build_prompts
    from ropedim.qa_data import synthetic_task

    try:
        lm = load_cached("smollm2")
    except ModelUnavailable as e:
        pytest.skip(str(e))
    ex = synthetic_task(4, 5, 0, seed=0)  # as tests/test_generation.py on the CPU
    got = sweep(lm, None, build_prompts(ex, lm.prompt_style, lm.tokenizer), {"none": None}, "fast", 24, cache=False)
    assert sum(best_subspan_em(x, e.answers) for x, e in zip(got["none"], ex)) >= 3
    long = build_prompts(synthetic_task(4, 20, 10, seed=0), lm.prompt_style, lm.tokenizer)  # the paper's 20 documents
    for mode in ("fast", "faithful"):
        assert any(sweep(lm, None, long, {"none": None}, mode, 24, cache=False)["none"])  # runs, answers
