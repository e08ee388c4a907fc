"""Device and precision: chosen by what the machine has, never hard-coded.

CPU defaults to float32 (bfloat16 matmuls are hundreds of times slower on some CPUs and faster on
others: `bf16_speedup()` measures it); CUDA defaults to bfloat16 autocast.
"""

from __future__ import annotations

import contextlib
import time

import torch

from lmforge.errors import LmforgeError


def pick_device(name: str = "auto", setting: str = "device='cpu'") -> torch.device:
    """The torch device `name` names (auto: CUDA where there is one). `setting` is how the caller's
    user chooses it, for the error when it is not there."""
    name = name.strip().lower() if isinstance(name, str) else name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LmforgeError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LmforgeError(f"device {name!r} was asked for but CUDA is not available here; use {setting}")
    return device


def autocast_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `dtype` on `device`, or None for plain float32."""
    if dtype == "float32" or (dtype == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context-manager factory: autocast to `dtype`, or a no-op for float32."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def bf16_speedup(n: int = 512, repeats: int = 10) -> float:
    """How many times faster a bfloat16 matmul is than float32 here (a short probe)."""

    def rate(dtype):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return time.perf_counter() - t

    return rate(torch.float32) / rate(torch.bfloat16)
