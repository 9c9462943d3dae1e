"""Which half precision a device gets: bf16 only where the GPU computes it natively, fp16 below, fp32 on CPU.

`torch.cuda.is_bf16_supported()` says True on a T4 (compute capability 7.5) because bf16 can be
emulated there, slowly; the GPU budget assumes the T4's fp16 tensor cores. Native bf16 starts with
Ampere (compute capability 8.0: A100, A10, L4, H100), so the choice is made on the capability alone.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

BF16_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with native bf16 tensor cores


def _cuda_index(device: str | torch.device) -> int | None:
    """The CUDA device index of `device`, or None when it is not a usable CUDA device."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def half_dtype(device: str | torch.device = "cuda") -> torch.dtype:
    """bfloat16 on a GPU of compute capability >= 8.0, float16 on older GPUs (T4, P100, V100), float32 on CPU."""
    index = _cuda_index(device)
    if index is None:
        return torch.float32
    return torch.bfloat16 if tuple(torch.cuda.get_device_capability(index)) >= BF16_MIN_CAPABILITY else torch.float16


def mixed_precision(device: str | torch.device = "cuda") -> str:
    """Accelerate's `mixed_precision` for `device`: "bf16", "fp16", or "no" on CPU."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(half_dtype(device), "no")


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly in `dtype` (no fp32 copy first: peak memory is what kills a free Colab)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
