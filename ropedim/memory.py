"""Memory planned, not discovered: batch sizes from the device's memory and the model's
config, and a clear error before a run that cannot fit.

What one sequence of T tokens costs (``Footprint``, from the config; dtype bytes b):

- its KV cache: ``kv_per_token`` = 2 (K and V) × layers × KV heads × head dim × b per token;
- the activations of a forward pass over it: ``act_per_token`` = b × (4 × hidden +
  3 × intermediate) per token, one layer at a time (the model's own attention on a GPU is a
  fused kernel: no T × T scores), and the last token's float32 logits (4 × vocab);
- a fast-sweep context (``ropedim.shared_prefix``): its prefix keys and values twice (the
  prefix-tree segments and their gathered copy) and the V variants' suffixes;
- an Eq. 4 example (``ropedim.utility.prepare``): K and V of every layer in the model's
  dtype (lossless: the model made them in it) and the query rows and their unmasked output
  in float32.

What the process may use (``budget``): on a GPU, ``(1 - HEADROOM)`` of the memory of its
GPUs, split evenly between the ``sharing`` processes placed there (``ropedim.devices``),
minus its own weights; at most ``(1 - HEADROOM)`` of what is free now
(``torch.cuda.mem_get_info`` plus the memory this process's allocator holds unused). The
headroom also covers transient buffers (a chunk of the shared-context kernel's scores is
at most 0.5 GiB, ``ropedim.attention``). The first term makes batches the same on
every worker (they split the same batches through the cache); the second only bites when
something else holds the GPU. On a CPU there is no plan: the configured batch sizes are
used, as before.

On a CPU under ``-n N`` every worker holds its own float32 copy of a model whose QA checks
it runs: ``host_memory_error`` refuses a run whose copies cannot fit before any is loaded.

On a GPU a batch holds as many items (generation rows, fast-sweep contexts) as fit, up to
``GPU_BATCH`` or the configured size if that is larger (the profiles' sizes are a CPU's);
an item that does not fit alone raises :class:`MemoryPlanError` before any work, with what
it needs and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import devices

__all__ = ["HEADROOM", "GPU_BATCH", "MemoryPlanError", "Footprint", "footprint", "budget", "plan_batch",
           "generation_batch", "sweep_batch", "ExamplePlacer", "on_device_examples", "tensor_bytes", "GiB"]

HEADROOM = 0.10  # of each GPU's memory, never planned for (allocator fragmentation, CUDA context)
GPU_BATCH = 32  # items per batch on a GPU when they fit (decoding is memory-bound: rows come almost free)
GiB = 1 << 30


class MemoryPlanError(RuntimeError):
    """A planned item does not fit in the device memory this process may use."""


@dataclass(frozen=True)
class Footprint:
    """Per-token sizes of a model, in bytes (see the module docstring)."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int

    @property
    def kv_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def act_per_token(self) -> int:
        return self.dtype_bytes * (4 * self.hidden + 3 * self.intermediate)

    def sequence(self, tokens: int, new_tokens: int = 0) -> int:
        """One row of a left-padded generation batch: the KV cache of prompt and answer and
        the prefill's activations."""
        return (tokens + new_tokens) * self.kv_per_token + tokens * self.act_per_token + 4 * self.vocab

    def shared_context(self, context_tokens: int, suffix_tokens: int, variants: int) -> int:
        """One context of the fast sweep: its prefix twice, V suffixes (question + answer)
        and the prefill's activations."""
        return (2 * context_tokens + variants * suffix_tokens) * self.kv_per_token + \
            context_tokens * self.act_per_token + variants * (suffix_tokens * self.act_per_token + 4 * self.vocab)

    def capture(self, tokens: int) -> int:
        """One forward pass capturing q, K, V (``ropedim.qa.analysis.capture_example``)."""
        return 2 * tokens * self.kv_per_token + tokens * self.act_per_token + 4 * self.vocab

    def prepared(self, tokens: int, query_rows: int) -> int:
        """One Eq. 4 example (``ropedim.utility.prepare``)."""
        return tokens * self.kv_per_token + 2 * 4 * self.layers * self.heads * query_rows * self.head_dim


def footprint(config, dtype: torch.dtype) -> Footprint:
    """The :class:`Footprint` of a transformers config (its text config) in ``dtype``."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return Footprint(c.num_hidden_layers, heads, getattr(c, "num_key_value_heads", None) or heads, head_dim,
                     c.hidden_size, getattr(c, "intermediate_size", None) or 4 * c.hidden_size, c.vocab_size,
                     torch.empty((), dtype=dtype).element_size())


def budget(total: int, weights: int, sharing: int = 1, free: int | None = None) -> int:
    """Bytes a process may plan for: ``(1 - HEADROOM) × total / sharing - weights``, and at
    most ``(1 - HEADROOM) × free`` (``free``: what the device has free now, this process's
    unused cached blocks included)."""
    planned = int((1 - HEADROOM) * total / max(1, sharing)) - weights
    if free is not None:
        planned = min(planned, int((1 - HEADROOM) * free))
    return max(0, planned)


def _model_budget(model) -> tuple[int | None, str]:
    """(budget, where) of a loaded model's process, or (None, "cpu") without a GPU."""
    dev = devices.input_device(model)
    if dev.type != "cuda":
        return None, dev.type
    gpus = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
    total = sum(torch.cuda.get_device_properties(i).total_memory for i in gpus)
    free = sum(torch.cuda.mem_get_info(i)[0] + torch.cuda.memory_reserved(i) - torch.cuda.memory_allocated(i)
               for i in gpus)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return budget(total, weights, devices.current(weights).sharing, free), ", ".join(f"cuda:{i}" for i in gpus)


def plan_batch(requested: int, per_item: int, available: int | None, what: str, where: str = "the GPU") -> int:
    """``min(max(requested, GPU_BATCH), available // per_item)``; ``available`` None (a
    CPU): ``requested``. Raises :class:`MemoryPlanError` when one item does not fit."""
    if available is None:
        return requested
    if per_item > available:
        raise MemoryPlanError(
            f"{what} needs {per_item / GiB:.2f} GiB but this process may plan {available / GiB:.2f} GiB on "
            f"{where} ({HEADROOM:.0%} headroom, the weights and the GPU's other workers taken out). Use fewer "
            "xdist workers per GPU (-n), a GPU with more memory, more GPUs for the model (device_map), or "
            "shorter prompts (fewer documents).")
    return max(1, min(max(requested, GPU_BATCH), available // per_item))


def _footprint_of(model) -> Footprint:
    return footprint(model.config, next(model.parameters()).dtype)


def generation_batch(model, requested: int, tokens: Callable[[], int], new_tokens: int) -> int:
    """Rows of a generation batch whose longest prompt has ``tokens()`` tokens (counted
    only on a GPU)."""
    available, where = _model_budget(model)
    if available is None:
        return requested
    tokens = tokens()
    per_row = _footprint_of(model).sequence(tokens, new_tokens)
    return plan_batch(requested, per_row, available, f"a prompt of {tokens} tokens (+{new_tokens} new)", where)


def sweep_batch(model, requested: int, context_tokens: int, suffix_tokens: int, variants: int) -> int:
    """Contexts of a fast-sweep batch (each continued in ``variants`` rows)."""
    available, where = _model_budget(model)
    if available is None:
        return requested
    per_ctx = _footprint_of(model).shared_context(context_tokens, suffix_tokens, variants)
    return plan_batch(requested, per_ctx, available,
                      f"a context of {context_tokens} tokens with {variants} variants of {suffix_tokens} tokens", where)


class ExamplePlacer:
    """Where prepared Eq. 4 examples wait for the solver: on the model's GPU while they fit
    beside the capture of one more example of ``tokens`` tokens, then on the CPU (the solver
    moves those chunk by chunk). Raises :class:`MemoryPlanError` at once when the capture
    of one example does not fit. On a CPU: every example stays where it is."""

    def __init__(self, model, tokens: int):
        self.available, where = _model_budget(model)
        self.kept = 0
        if self.available is not None:
            work = _footprint_of(model).capture(tokens)
            plan_batch(1, work, self.available, f"capturing q, K, V of {tokens} tokens", where)
            self.available -= work

    def __call__(self, example):
        if self.available is None:
            return example
        size = tensor_bytes(example)
        if self.kept + size <= self.available:
            self.kept += size
            return example
        return example.to("cpu")


def tensor_bytes(obj) -> int:
    """Bytes of the tensors an object (a dataclass, a dict) holds directly."""
    items = obj.values() if isinstance(obj, dict) else vars(obj).values()
    return sum(x.numel() * x.element_size() for x in items if isinstance(x, torch.Tensor))


def on_device_examples(fp: Footprint, n: int, tokens: int, query_rows: int, available: int) -> int:
    """How many of ``n`` prepared examples (``tokens`` keys, ``query_rows`` queries each)
    :class:`ExamplePlacer` keeps on a GPU with ``available`` planned bytes (the arithmetic,
    for tests and the README)."""
    return max(0, min(n, (available - fp.capture(tokens)) // fp.prepared(tokens, query_rows)))


# ---------------------------------------------------------------- host memory under -n N (CPU)

LOAD_PEAK = 1.3  # a float32 load peaks at 1.3× the weights (measured: qwen2.5-1.5b's first,
#                  dequantising load, 8.7 GiB RSS for 6.6 GiB of weights)


def mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def host_memory_error(weights: dict[str, int], per_worker: set[str], workers: int,
                      available: int) -> str | None:
    """None if the CPU copies of the models fit in ``available`` bytes, else why not and what
    to run instead. ``weights``: float32 bytes per model; a model in ``per_worker`` is loaded
    by every worker (its QA checks are dealt out), the others by one (their weight checks
    are one xdist group)."""
    once = sum(b for m, b in weights.items() if m not in per_worker)
    each = sum(b for m, b in weights.items() if m in per_worker)
    need = LOAD_PEAK * (once + each * workers)
    if need <= available:
        return None
    fit = int((available / LOAD_PEAK - once) // each) if each else 0
    parts = ", ".join(f"{m} {b / GiB:.1f} GiB × {workers if m in per_worker else 1}" for m, b in weights.items())
    instead = f"-n {fit}" if fit >= 2 else "-n 0"
    return (f"-n {workers}: the models' float32 copies need about {need / GiB:.1f} GiB ({parts}; × {LOAD_PEAK} "
            f"load peak) but {available / GiB:.1f} GiB is available (MemAvailable): workers would be "
            f"killed for memory mid-run. Run with {instead} instead (on a CPU one process already uses "
            f"every core), or fewer --model.")
