"""Normalisation layers.

LayerNorm:  y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta      (GPT-2, BERT)
RMSNorm:    y = x / sqrt(mean(x^2) + eps) * gamma                       (Llama; no centring, no bias)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def make_norm(kind: str, d: int, eps: float, bias: bool = True) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(d, eps)
    return nn.LayerNorm(d, eps=eps, bias=bias)
