"""Decode steps on the CPU: a faster matrix-vector product when the machine has one.

A decode step at batch 1 multiplies one row vector by every weight matrix (a GEMV): it does two
FLOPs per weight it reads, so its speed is how fast the weights stream from memory, and BLAS
libraries differ a lot at it. On some CPUs the BLAS inside PyTorch reaches a third of the memory
bandwidth on a GEMV while the OpenBLAS inside NumPy reaches most of it. `faster_gemv()` measures
both on a matrix of the model's size; when NumPy's wins, `decode_linears` routes the nn.Linear
layers of a model through it for small batches without gradients (the decode steps), sharing the
weight memory (no copy), and leaves everything else, training included, to PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SMALL_BATCH = 16  # rows up to which a product counts as matrix-vector work


def _numpy_linear(x: torch.Tensor, w: np.ndarray, b: np.ndarray | None) -> torch.Tensor:
    """y = x W^T + b for x (..., in), W (out, in) as NumPy arrays sharing the tensors' memory."""
    rows = x.reshape(-1, x.size(-1)).numpy()
    y = w @ rows[0] if rows.shape[0] == 1 else rows @ w.T  # GEMV for one row, GEMM for a few
    if b is not None:
        y += b
    return torch.from_numpy(y).view(*x.shape[:-1], w.shape[0])


@functools.lru_cache(maxsize=8)
def faster_gemv(d_in: int, d_out: int, repeats: int = 20) -> str:
    """"numpy" or "torch": whichever multiplies a vector by a stack of (d_out, d_in) float32 matrices
    larger than the cache faster here. LMFORGE_GEMV=torch|numpy overrides the measurement."""
    forced = os.environ.get("LMFORGE_GEMV", "").lower()
    if forced in ("torch", "numpy"):
        return forced
    if 4 * d_in * d_out < 1 << 18:  # under 256 KB a product is all call overhead: nothing to gain
        return "torch"
    n = max(2, (64 << 20) // (4 * d_in * d_out))  # ~64 MB of weights: out of the caches
    ws = [torch.full((d_out, d_in), 0.01) for _ in range(n)]
    arrays = [w.numpy() for w in ws]
    x = torch.randn(1, d_in)

    def timed(f) -> float:
        f()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(max(1, repeats // n)):
                f()
            best = min(best, time.perf_counter() - t)
        return best

    with torch.no_grad():
        t_torch = timed(lambda: [F.linear(x, w) for w in ws])
        t_numpy = timed(lambda: [_numpy_linear(x, a, None) for a in arrays])
    return "numpy" if t_numpy < 0.8 * t_torch else "torch"


def use_numpy_gemv(model: nn.Module, choice: str = "auto") -> bool:
    """Whether decode steps of `model` should go through NumPy: choice "numpy", "torch", or "auto"
    (a float32 model on the CPU, and the probe finds NumPy faster at the model's feed-forward size)."""
    if choice not in ("auto", "numpy", "torch"):
        raise ValueError(f"gemv must be auto, numpy or torch, not {choice!r}")
    p = next(model.parameters())
    if choice == "torch" or p.device.type != "cpu" or p.dtype != torch.float32:
        return False
    return choice == "numpy" or faster_gemv(model.config.d_model, model.config.d_ff) == "numpy"


@contextlib.contextmanager
def decode_linears(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every float32 CPU nn.Linear of `model` computes batches of up to
    SMALL_BATCH rows without gradients through NumPy; on leaving, each is restored.

    PyTorch runs one thread meanwhile: its idle OpenMP workers spin for a while after each
    operation, and spinning threads beside NumPy's own BLAS threads on the same cores make both
    many times slower. The thread count is restored on leaving too.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and "forward" not in m.__dict__
               and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]  # not already routed
    if not (enabled and linears):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for m in linears:
        w = m.weight.detach().numpy()
        b = None if m.bias is None else m.bias.detach().numpy()

        def forward(x, m=m, w=w, b=b):
            if torch.is_grad_enabled() or x.dtype != torch.float32 or x.numel() > SMALL_BATCH * x.size(-1):
                return F.linear(x, m.weight, m.bias)
            return _numpy_linear(x, w, b)

        m.forward = forward  # an instance attribute: nn.Module.__call__ finds it before the class's
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for m in linears:
            del m.forward
