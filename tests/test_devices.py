"""Devices: the assignment of xdist workers to GPUs (with faked device counts), and that
every tensor the library makes on the run path says which device it goes to."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from torch.overrides import TorchFunctionMode

from fixtures import devices as plugin
from ropedim import devices
from ropedim.devices import Placement, auto_workers, current, gpus_needed, place, xdist_worker

GB = 10 ** 9


def _env(worker=None, workers=None, device=None) -> dict:
    env = {}
    if worker is not None:
        env.update(PYTEST_XDIST_WORKER=f"gw{worker}", PYTEST_XDIST_WORKER_COUNT=str(workers))
    if device is not None:
        env["ROPEDIM_DEVICE"] = device
    return env


# ---------------------------------------------------------------- the assignment rules

def test_xdist_worker():
    assert xdist_worker({}) == (0, 1)
    assert xdist_worker(_env(3, 4)) == (3, 4)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_no_gpu_means_the_cpu_for_every_worker(workers):
    for w in range(workers):
        p = place(0, w, workers)
        assert p == Placement() and p.device == torch.device("cpu")


def test_one_worker_per_gpu():
    got = [place(4, w, 4) for w in range(4)]
    assert [p.device for p in got] == [torch.device(f"cuda:{i}") for i in range(4)]
    assert all(p.sharing == 1 for p in got)
    assert got[2].load_kwargs() == {"device_map": {"": "cuda:2"}}


def test_more_workers_than_gpus_share_them_round_robin():
    got = [place(4, w, 6) for w in range(6)]
    assert [p.gpus for p in got] == [(0,), (1,), (2,), (3,), (0,), (1,)]
    assert [p.sharing for p in got] == [2, 2, 1, 1, 2, 2]  # GPU 0 and 1 are split between two workers
    assert [place(1, w, 2).sharing for w in range(2)] == [2, 2]  # -n 2 on one GPU


def test_a_model_too_large_for_one_gpu_gets_a_group():
    got = [place(8, w, 4, per_model=2) for w in range(4)]
    assert [p.gpus for p in got] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    kw = got[1].load_kwargs(gpu_bytes=24 * GB)
    assert kw["device_map"] == "auto" and kw["max_memory"] == {2: int(0.7 * 24 * GB), 3: int(0.7 * 24 * GB)}
    assert got[1].device == torch.device("cuda:2")
    with pytest.raises(RuntimeError, match="needs 3 GPUs.*1 are visible"):
        place(1, per_model=3)


def test_gpus_needed_and_auto_workers():
    bf16_8b = 16 * GB
    assert gpus_needed(bf16_8b, 80 * GB) == 1 and gpus_needed(bf16_8b, 24 * GB) == 1
    assert gpus_needed(bf16_8b, 16 * GB) == 2 and gpus_needed(None, 16 * GB) == 1
    assert auto_workers(0) is None  # xdist's own default on a CPU machine
    assert auto_workers(8) == 8 and auto_workers(8, per_model=2) == 4 and auto_workers(1) == 1


@pytest.fixture
def four_gpus(monkeypatch):
    """torch sees 4 GPUs of 80 GB (as under CUDA_VISIBLE_DEVICES=0,1,2,3)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(devices, "gpu_memory", lambda n=None: 80 * GB)


def test_current_reads_the_worker_and_the_override(four_gpus):
    assert current(env=_env(2, 4)).device == torch.device("cuda:2")
    assert current(env={}).device == torch.device("cuda:0")  # no xdist: the first visible GPU
    assert current(60 * GB, env=_env(1, 2)).gpus == (2, 3)  # 60 GB of weights: two 80 GB GPUs
    assert current(env=_env(2, 4, "cpu")).device == torch.device("cpu")
    fixed = current(env=_env(2, 4, "cuda:1"))
    assert fixed.gpus == (1,) and fixed.sharing == 4
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        current(env=_env(device="gpu0"))


def test_on_this_machine():
    if torch.cuda.is_available():
        pytest.skip("CUDA is visible here: the CPU case is not this machine's")
    assert current(env=_env(1, 2)).device == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        current(env=_env(device="cuda"))


def _config(models=(), device=None):
    opts = {"--model": list(models) or None, "--device": device}
    return SimpleNamespace(getoption=lambda name: opts[name])


def test_n_auto(four_gpus, monkeypatch):
    from ropedim import models

    assert plugin.pytest_xdist_auto_num_workers(_config()) == 4
    assert plugin.pytest_xdist_auto_num_workers(_config(device="cpu")) is None
    monkeypatch.setattr(models, "weight_bytes", lambda name: 100 * GB if name == "big" else None)
    assert plugin.pytest_xdist_auto_num_workers(_config(["smollm2", "big"])) == 2  # 100 GB: 2 of 80 GB each
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert plugin.pytest_xdist_auto_num_workers(_config(["smollm2"])) is None  # a CPU machine: unchanged


def test_weight_bytes_from_a_config_without_weights(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    from ropedim import models
    from ropedim.models.hf import weight_bytes

    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False)
    assert weight_bytes(cfg, torch.bfloat16) == pytest.approx(2 * 8.03e9, rel=0.01)  # Llama-3.1-8B
    cfg.save_pretrained(tmp_path / "Llama-3.1-8B-Instruct")  # a config alone, as before a download
    monkeypatch.setenv("ROPEDIM_MODELS", str(tmp_path))
    assert models.weight_bytes("llama") == weight_bytes(cfg, torch.bfloat16)
    assert models.weight_bytes("tiny-llama") is None and models.weight_bytes(str(tmp_path / "absent")) is None
    assert models.weight_bytes("smollm2") == 134_515_008 * 2  # a GGUF's tensors, from its header


# ---------------------------------------------------------------- tensors say where they go

FACTORIES = {torch.tensor, torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.randn,
             torch.rand, torch.randint, torch.randperm, torch.linspace, torch.eye, torch.as_tensor}


class DeviceAudit(TorchFunctionMode):
    """Records every tensor factory that code under ``ropedim/`` calls without a device (a
    tensor that lands on the default device, the CPU, whatever the model's device is);
    ``as_tensor`` of a tensor keeps its device and is fine."""

    def __init__(self):
        super().__init__()
        self.found: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs and not (args and isinstance(args[0], torch.Tensor)):
            f = sys._getframe(1)
            while f is not None and f"{'/'}torch{'/'}" in f.f_code.co_filename:
                f = f.f_back
            if f is not None and "/ropedim/" in f.f_code.co_filename:
                self.found.add(f"{f.f_code.co_filename.split('/ropedim/')[-1]}:{f.f_lineno} {func.__name__}")
        return func(*args, **kwargs)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_every_tensor_on_the_run_path_names_its_device(name, tmp_path, monkeypatch, one_thread):
    """The §5 path end to end (fast and faithful sweeps, capture, retrieval, Eq. 4, masks):
    on a GPU such a tensor would sit on the CPU beside the model's and fail (or copy) there."""
    from ropedim.generation import generate, sweep
    from ropedim.models import load_cached
    from ropedim.prompts import build_prompts
    from ropedim.qa.analysis import HeadScores, capture_example
    from ropedim.qa.masks import LowUtility, RetrievalHeadDims
    from ropedim.qa_data import synthetic_task
    from ropedim.retrieval import average_scores, retrieval_scores
    from ropedim.utility import RoPE, UtilityConfig, prepare, utility_scores

    monkeypatch.setenv("ROPEDIM_CACHE", str(tmp_path))
    lm = load_cached(name)
    a = lm.anatomy
    ps = build_prompts(synthetic_task(2, 2, 0, seed=0), "plain")[:2]
    m = torch.ones(a.n_layers, a.n_heads, a.head_dim, device=lm.device)
    m[:, :, :4] = 0
    cfg = UtilityConfig(max_steps=3)
    audit = DeviceAudit()
    with audit:
        fast = sweep(lm, None, ps, {"none": None, "m": m}, "fast", 4, batch_size=2)
        generate(lm, None, ps, 4, batch_size=2, mask=m)
        exs = [capture_example(lm, p, ans) for p, ans in zip(ps, fast["none"])]
        per = [retrieval_scores(e.capture, None, e.context, bos_index=e.bos_index) for e in exs]
        u = utility_scores([prepare(dict(e.capture), cfg, rope=RoPE.of(a)) for e in exs], cfg, device=lm.device)
        ret = average_scores(per)
        scores = HeadScores(ret, torch.stack(per), ret, u.u, u.converged, u.error, len(exs), "literal")
        for mask in (LowUtility(), RetrievalHeadDims()):
            mask.build(a, scores)
    assert not audit.found, sorted(audit.found)
