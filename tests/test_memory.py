"""Memory planning (``ropedim.memory``): the arithmetic on the paper's three configs, and a
prompt that cannot fit failing before any work."""

from __future__ import annotations

import pytest
import torch

from ropedim import memory
from ropedim.memory import GPU_BATCH, GiB, HEADROOM, MemoryPlanError, budget, footprint, on_device_examples, plan_batch

GB = 10 ** 9
H100 = 80 * GB  # an "80 GB" GPU reports ~85e9 bytes (79.2 GiB) to CUDA; 80e9 errs on the safe side


def _paper_configs():
    from transformers import LlamaConfig, Olmo2Config, Qwen2Config

    common = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_hidden_layers=32)
    return {
        "llama": LlamaConfig(vocab_size=128256, **{**common, "intermediate_size": 14336}, num_key_value_heads=8),
        "qwen": Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
                            num_hidden_layers=28, num_key_value_heads=4),
        "olmo": Olmo2Config(vocab_size=100352, **common, num_key_value_heads=32),  # no GQA
    }


@pytest.fixture(scope="module")
def paper():
    from ropedim.models.hf import weight_bytes

    return {name: (footprint(cfg, torch.bfloat16), weight_bytes(cfg, torch.bfloat16))
            for name, cfg in _paper_configs().items()}


def test_kv_cache_per_token_is_layers_kv_heads_head_dim_dtype(paper):
    # 2 (K and V) x layers x KV heads x head dim x 2 bytes (bfloat16)
    assert paper["llama"][0].kv_per_token == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert paper["qwen"][0].kv_per_token == 2 * 28 * 4 * 128 * 2
    assert paper["olmo"][0].kv_per_token == 2 * 32 * 32 * 128 * 2
    assert footprint(_paper_configs()["llama"], torch.float32).kv_per_token == 2 * 128 * 1024
    assert paper["llama"][1] == pytest.approx(16.06e9, rel=0.01) and paper["qwen"][1] == pytest.approx(15.2e9, rel=0.01)


def test_budget():
    assert budget(100 * GB, 20 * GB) == int((1 - HEADROOM) * 100 * GB) - 20 * GB
    assert budget(100 * GB, 20 * GB, sharing=2) == int((1 - HEADROOM) * 50 * GB) - 20 * GB  # two workers per GPU
    assert budget(100 * GB, 20 * GB, free=10 * GB) == int((1 - HEADROOM) * 10 * GB)  # something else holds the GPU
    assert budget(16 * GB, 16 * GB) == 0


def test_plan_batch():
    assert plan_batch(8, 3 * GiB, None, "x") == 8  # a CPU: the configured size
    assert plan_batch(8, 3 * GiB, 10 * GiB, "x") == 3  # a GPU: what fits,
    assert plan_batch(2, 1 * GiB, 100 * GiB, "x") == GPU_BATCH  # up to GPU_BATCH
    assert plan_batch(48, 1 * GiB, 100 * GiB, "x") == 48  # or the configured size if larger
    with pytest.raises(MemoryPlanError, match=r"a prompt needs 3.00 GiB but this process may plan 2.00 GiB on cuda:1.*-n"):
        plan_batch(8, 3 * GiB, 2 * GiB, "a prompt", "cuda:1")


@pytest.mark.parametrize("name", ["llama", "qwen", "olmo"])
def test_the_paper_size_on_one_80_gb_gpu(paper, name):
    """20 documents (~2700 tokens) + 32 new tokens: generation batches, fast-sweep contexts
    with the claims' 6 variants, and the analysis captures for Eq. 4 (100 examples)."""
    fp, weights = paper[name]
    avail = budget(H100, weights)
    rows = plan_batch(4, fp.sequence(2700, 32), avail, "a prompt")
    contexts = plan_batch(4, fp.shared_context(2700, 60 + 32, 6), avail, "a context")
    assert rows == GPU_BATCH and contexts >= 16  # batches of 32 prompts / 16+ contexts, not the CPU's 4
    kept = on_device_examples(fp, 100, 2700, 64, avail)
    if name == "olmo":  # 32 KV heads: 1.3 GiB per example; the rest wait on the CPU
        assert 30 <= kept < 100
    else:  # GQA: all 100 examples stay beside the model
        assert kept == 100
    assert fp.prepared(2700, 64) * kept + fp.capture(2700) <= avail


def test_a_prompt_too_long_for_the_gpu_is_an_error_before_the_run(monkeypatch):
    """The planner is consulted before the first batch: nothing is generated."""
    from ropedim.generation import generate, sweep
    from ropedim.models import load_cached

    lm = load_cached("tiny-llama")
    monkeypatch.setattr(memory, "_model_budget", lambda model: (64 * 1024, "cuda:0"))  # a 64 KiB "GPU"
    calls = []
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: calls.append(1))
    for run in (lambda: generate(lm, None, ["x" * 300], 4, cache=False),
                lambda: sweep(lm, None, [_prompt()], {"none": None}, "fast", 4, cache=False)):
        with pytest.raises(MemoryPlanError, match="GiB"):
            run()
    assert not calls


def _prompt():
    from ropedim.prompts import build_prompts
    from ropedim.qa_data import synthetic_task

    return build_prompts(synthetic_task(1, 2, 0, seed=0), "plain")[0]


def test_generation_batches_are_planned(monkeypatch):
    from ropedim.models import load_cached

    model = load_cached("tiny-llama").model
    fp = memory.footprint(model.config, torch.float32)
    monkeypatch.setattr(memory, "_model_budget", lambda m: (3 * fp.sequence(100, 8), "cuda:0"))
    assert memory.generation_batch(model, 8, lambda: 100, 8) == 3
    assert memory.sweep_batch(model, 8, 100, 8, 1) >= 1
    monkeypatch.undo()
    assert memory.generation_batch(model, 8, lambda: 10 ** 9, 8) == 8  # the CPU: unplanned, nothing counted


def test_examples_wait_on_the_cpu_once_the_gpu_is_planned_full(monkeypatch):
    from ropedim.models import load_cached

    model = load_cached("tiny-llama").model
    fp = memory.footprint(model.config, torch.float32)

    class Example:
        def __init__(self):
            self.k, self.moved = torch.zeros(1000), False

        def to(self, device):
            self.moved = True
            return self

    monkeypatch.setattr(memory, "_model_budget", lambda m: (fp.capture(50) + 2500 * 4, "cuda:0"))
    place = memory.ExamplePlacer(model, tokens=50)
    assert [place(Example()).moved for _ in range(4)] == [False, False, True, True]  # 2 of 4000 bytes fit
    monkeypatch.setattr(memory, "_model_budget", lambda m: (fp.capture(50) - 1, "cuda:0"))
    with pytest.raises(MemoryPlanError, match="capturing q, K, V of 50 tokens"):
        memory.ExamplePlacer(model, tokens=50)


# ---------------------------------------------------------------- host memory under -n N

def test_host_memory_counts_a_copy_per_worker_for_qa_models_only():
    w = {"qwen2.5-1.5b": int(6.6 * GiB), "smollm2": int(0.5 * GiB)}
    # the default run: smollm2 in every worker (QA), qwen2.5-1.5b in one (its weight checks)
    assert memory.host_memory_error(w, {"smollm2"}, 4, 20 * GiB) is None
    why = memory.host_memory_error(w, {"qwen2.5-1.5b", "smollm2"}, 4, 20 * GiB)
    assert why.startswith("-n 4:") and "qwen2.5-1.5b 6.6 GiB × 4" in why and "MemAvailable" in why
    assert "Run with -n 2 instead" in why  # 2 × 7.1 GiB × 1.3 = 18.5 GiB fits in 20
    assert "Run with -n 0 instead" in memory.host_memory_error(w, {"qwen2.5-1.5b"}, 4, 10 * GiB)


def test_n_workers_refused_before_loading(monkeypatch):
    """``check_host_memory`` runs at configure, on the controller, on a CPU only."""
    from types import SimpleNamespace

    from fixtures import models as fm
    from fixtures.options import Settings
    from ropedim import models, profiles

    monkeypatch.setattr(memory, "mem_available", lambda: 20 * GiB)
    monkeypatch.setattr(models, "weight_bytes", lambda name, dtype: int(6.6 * GiB))
    monkeypatch.setattr("fixtures.devices._gpus", lambda config: 0)
    s = Settings(("qwen2.5-1.5b",), profiles.get("default"), None, 0, None, weights_models=("qwen2.5-1.5b",))
    config = SimpleNamespace(option=SimpleNamespace(numprocesses=4))
    with pytest.raises(pytest.UsageError, match="-n 4: the models' float32 copies need about 34.3 GiB"):
        fm.check_host_memory(config, s)
    fm.check_host_memory(SimpleNamespace(option=SimpleNamespace(numprocesses=2)), s)  # 17.2 GiB fits
    fm.check_host_memory(SimpleNamespace(option=SimpleNamespace(numprocesses=4), workerinput={}), s)  # a worker
