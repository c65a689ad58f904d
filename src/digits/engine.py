"""Where and how tensors are computed: device, precision, memory layout and compilation.

Training and inference ask this module, never torch directly, how to run fast:
bf16 autocast where the hardware computes in bf16 natively (CUDA GPUs, CPUs with
AVX512-BF16 or AMX) with fp32 master weights, channels-last tensors so oneDNN and
cuDNN pick their fast convolution kernels, and torch.compile only when asked for,
falling back to eager execution if compilation fails.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .errors import DigitsError
from .mnist import FIELD

PRECISIONS = ("auto", "bf16", "fp32")
# Bytes of a model's largest activation per forward pass when predicting on a CPU: about half
# the last-level cache of the 2-core machine (32 MiB). Larger passes wait on memory, smaller ones
# on per-layer overhead; benchmarks/forward_pass_size.py measures it (figures in benchmarks/README.md).
CPU_PASS_BYTES = 16 * 2**20
GPU_PASS = 2048  # images per forward pass on a GPU, which wants large ones
_pass_sizes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks a CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise DigitsError(f"--device {name}: choose auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise DigitsError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)


@lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), not by emulation."""
    flags = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    # No /proc/cpuinfo (macOS, Windows): ask oneDNN, which also accepts emulated bf16.
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bf16_is_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_bf16()


def resolve_precision(name: str, device: torch.device) -> str:
    """auto means bf16 where the device computes it natively, else fp32."""
    if name not in PRECISIONS:
        raise DigitsError(f"--precision {name}: choose {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if bf16_is_native(device) else "fp32"
    return name


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """PyTorch uses ``count`` CPU threads inside the block (None: its own choice), and what it
    used before after it: the setting is global to the process."""
    if count is not None and count < 1:
        raise DigitsError(f"--threads {count}: give a number of threads ≥ 1")
    if count is not None and count > 4 * (os.cpu_count() or 1):  # each thread's stack costs memory, to no gain
        raise DigitsError(f"--threads {count}: this machine has {os.cpu_count()} cores; give at most "
                          f"{4 * (os.cpu_count() or 1)}")
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 matmuls and convolutions, fp32 weights."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device, memory_format=torch.channels_last)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to the device; through pinned memory to a GPU, so the copy runs asynchronously."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def as_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) images as the float (N, 1, 28, 28) channels-last batch models take."""
    return images.unsqueeze(1).float().contiguous(memory_format=torch.channels_last)


def inference_batch_size(model: nn.Module, device: torch.device) -> int:
    """Images per forward pass when predicting many: on a CPU, as many as keep the model's
    largest activation within CPU_PASS_BYTES (memory traffic, not arithmetic, limits a pass
    whose activations leave the cache); on a GPU, GPU_PASS. Measured once per model, with a
    one-image pass in evaluation mode."""
    if device.type != "cpu":
        return GPU_PASS
    if model not in _pass_sizes:
        sizes = [0]
        record = lambda module, inputs, out: sizes.append(out.numel() * out.element_size())  # noqa: E731
        hooks = [m.register_forward_hook(record) for m in model.modules() if not any(m.children())]
        try:
            with torch.inference_mode(), eval_mode(model):
                model(torch.zeros(1, 1, FIELD, FIELD, device=device))
        finally:
            for hook in hooks:
                hook.remove()
        _pass_sizes[model] = max(16, CPU_PASS_BYTES // max(sizes))
    return _pass_sizes[model]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in evaluation mode for the block, and back in the mode it was in afterwards,
    whatever happens. A model already evaluating is left alone: switching modes walks every
    module, too slow for one-digit requests."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def model_device(model: nn.Module) -> torch.device:
    """Where a model's weights are, and so where its inputs must go."""
    return next(model.parameters()).device


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits for uint8 (N, 28, 28) or float (N, 1, 28, 28) images, computed where the model is,
    in forward passes of ``batch_size`` (default: sized to the model and the device, see
    inference_batch_size)."""
    device = model_device(model)
    batch_size = batch_size or inference_batch_size(model, device)
    out = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            batch = as_batch(batch) if batch.ndim == 3 else batch.float()
            out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 10)


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile the model if asked; any compilation failure falls back to eager execution.

    Off by default: on a 2-core CPU compiling takes about a minute and the convolutions
    already run in oneDNN, so it rarely pays for runs of seconds to minutes; on an H100 the
    compiled zoo models trained no faster than eager ones either.
    """
    if not enabled:
        return model
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    return torch.compile(model)


