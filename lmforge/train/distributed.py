"""What wraps a built model for the hardware it trains on, so model code stays single-device.

Compilation (`train.compile`): `torch.compile` traces the training forward pass into a graph once
(TorchDynamo), and TorchInductor generates kernels that fuse the elementwise work between the
matrix products (bias + GELU, LayerNorm, residual adds) and their backward passes, so each
activation is read and written once instead of once per operation. The products themselves still
go to the BLAS (cuBLAS on a GPU). The first step pays for the compilation (tens of seconds on a
laptop CPU, a minute or more for GPT-2 on a GPU); every later step runs the compiled graph.

    auto: compile on CUDA, where fusing saves most (memory-bound kernels, kernel launches);
          stay eager on the CPU, where the products dominate and the gain is a few percent
    true / false: always / never

The trainer keeps the model itself for evaluation and checkpoints; the compiled wrapper shares its
parameters, so nothing is copied.
"""

from __future__ import annotations

import torch
from torch import nn


def should_compile(setting: str | bool, device: torch.device) -> bool:
    """`train.compile` (auto / True / False, as TrainConfig.validate leaves it) on this device."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def compiled(model: nn.Module) -> nn.Module:
    """The model behind `torch.compile`. Compilation happens at the first call, so a failure there
    (no C++ compiler for the CPU backend, an operation the compiler does not cover) shows in the
    first training step; the trainer then goes on with the model as it is (Trainer._accumulate)."""
    return torch.compile(model)
