"""What every peer offers the benchmark: one model shape, a loss, and two ways to decode.

A peer wraps one implementation of the same GPT-2-shaped model. The benchmark owns the optimiser,
the batches, the timing and the autocast, so the only thing that differs between peers is the
implementation itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Shape:
    """GPT-2 shaped: learned positions, LayerNorm (eps 1e-5), exact GELU, tied embeddings, bias, dropout 0."""

    n_layer: int = 6
    n_head: int = 6
    d_model: int = 384
    vocab_size: int = 8192
    context_length: int = 256
    batch_size: int = 8


# "small": the CPU comparison the README reports; "gpt2": GPT-2 small (124M), the GPU comparison
SHAPES = {"small": Shape(), "gpt2": Shape(n_layer=12, n_head=12, d_model=768, vocab_size=50257, context_length=1024)}


class Peer:
    """Subclasses set `self.model` and implement `forward_logits`, `greedy` and `sample`."""

    name = "peer"
    model: nn.Module

    def __init__(self, shape: Shape, device: torch.device):
        self.shape, self.device = shape, device
        self.train_module: nn.Module | None = None  # the (possibly compiled) module used for training

    # --- training ------------------------------------------------------------------------------
    def forward_logits(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits through `module` (the model or its compiled wrapper)."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy; the same formula for every peer (logits in float32)."""
        logits = self.forward_logits(self.trainee(), x)
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    def trainee(self) -> nn.Module:
        """The module training runs through: the compiled wrapper once there is one, else the model.
        (Not `train_module or model`: a compiled module refuses truth testing.)"""
        return self.model if self.train_module is None else self.train_module

    def compile_for_training(self) -> None:
        self.train_module = torch.compile(self.model)

    # --- decoding --------------------------------------------------------------------------------
    def greedy(self, ids: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T) -> (B, T + n): argmax decoding."""
        raise NotImplementedError

    def sample(self, ids: torch.Tensor, n: int, temperature: float, top_k: int, seed: int) -> torch.Tensor:
        """(B, T) -> (B, T + n): temperature + top-k sampling, seeded."""
        raise NotImplementedError

    # --- size --------------------------------------------------------------------------------------
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())  # tied weights counted once

    def weight_bytes(self) -> int:
        """Bytes of every distinct parameter: what one batch-1 decode step reads from memory at least."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())
