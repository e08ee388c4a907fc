"""What wraps a built model for the hardware it trains on, so model code stays single-device.

Compilation (`train.compile`): `torch.compile` traces a Transformer layer's forward pass into a
graph once (TorchDynamo), and TorchInductor generates kernels that fuse the elementwise work
between the matrix products (bias + GELU, LayerNorm, residual adds) and their backward passes, so
each activation is read and written once instead of once per operation. The products themselves
still go to the BLAS (cuBLAS on a GPU).

Each `nn.Block` is compiled, not the whole model: every family (GPT, Llama, BERT, ELECTRA's two
encoders, a fine-tuning head on any of them) and every objective then runs compiled, whatever it
calls; the layers share one compiled graph (same code, parameters passed in), so a 12-layer model
compiles one layer's worth. Embeddings, heads and losses stay eager. The first step pays for the
compilation (tens of seconds on a laptop CPU); every later step runs the compiled graph.

    auto: compile on CUDA, where fusing saves most (memory-bound kernels, kernel launches);
          stay eager on the CPU, where the products take ~80% of a step and the gain is lost in noise
    true / false: always / never

Only training steps run compiled (`CompiledLayers.active`); evaluation and generation see the plain
model, so they never wait for a compile of another shape. The state dict is untouched.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from lmforge.config import auto_or_bool
from lmforge.nn import Block


def should_compile(setting: str | bool, device: torch.device) -> bool:
    """`train.compile` (auto, or a yes/no: True, "false", "on", ...) on this device."""
    setting = auto_or_bool(setting, "train.compile")
    return device.type == "cuda" if setting == "auto" else setting


class CompiledLayers:
    """Every Transformer layer of `model` with a compiled forward, switched on inside `active()`.

    `torch.compile` compiles at the first call, so a failure (no C++ compiler for the CPU backend,
    an operation the compiler does not cover) shows in the first training step; the trainer then
    goes on without it (Trainer._accumulate)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, Block)]
        self.forwards = [torch.compile(layer.forward) for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def on(self) -> None:
        for layer, forward in zip(self.layers, self.forwards):
            layer.forward = forward  # an instance attribute in front of Block.forward

    def off(self) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)  # back to the class's own forward

    @contextlib.contextmanager
    def active(self):
        self.on()
        try:
            yield
        finally:
            self.off()
