"""What the machine can do, measured in the same run: the ceilings the figures are compared against.

    matmul FLOP/s = 2 n^3 / t            best of several n x n products (fp32; bf16 where it is fast)
    copy bandwidth = 2 * bytes / t      one large tensor copied (read + write), best of several
    bf16 speedup                        lmforge.runtime.bf16_speedup(), the probe lmforge itself uses
"""

from __future__ import annotations

import time

import torch

from bench.measure import sync


def _best_time(fn, device: torch.device, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                 inner: int = 4, repeats: int = 5) -> float:
    """FLOP/s of an n x n @ n x n product (n 1024 on CPU, 4096 on CUDA)."""
    n = n or (4096 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def product():
        for _ in range(inner):
            a @ b

    return inner * 2 * n**3 / _best_time(product, device, repeats)


def copy_bandwidth(device: torch.device, mbytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s moved by copying one large float32 tensor into another (each byte read once, written once)."""
    n = mbytes * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_time(lambda: dst.copy_(src), device, repeats)


def bf16_speedup(device: torch.device) -> float:
    """bfloat16 / float32 matmul speed: lmforge's own probe on CPU; a direct comparison on CUDA."""
    if device.type == "cpu":
        from lmforge.runtime import bf16_speedup as cpu_probe

        return cpu_probe()
    return matmul_flops(device, torch.bfloat16) / matmul_flops(device, torch.float32)


def run_all(device: torch.device, bf16: bool) -> dict:
    out = {"matmul_fp32_flops": matmul_flops(device), "copy_bytes_per_s": copy_bandwidth(device)}
    out["bf16_speedup"] = bf16_speedup(device)
    if bf16 and out["bf16_speedup"] > 1.0:  # never time a slow bf16 product at full size
        out["matmul_bf16_flops"] = matmul_flops(device, torch.bfloat16)
    return out
