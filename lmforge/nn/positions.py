"""Position information: learned, sinusoidal, and rotary (RoPE).

Sinusoidal (Vaswani et al. 2017):  PE(p, 2i) = sin(p / 10000^(2i/d)),  PE(p, 2i+1) = cos(p / 10000^(2i/d)).
RoPE (Su et al. 2021): rotate each pair of query/key features by an angle p * theta_i with
theta_i = base^(-2i/D), so q_m . k_n depends only on m - n. Pairs are (x_i, x_{i+D/2}) ("rotate half"),
the layout Llama checkpoints use:  rope(x) = x * cos + rotate_half(x) * sin.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """One trained vector per position (GPT-2, BERT)."""

    def __init__(self, context_length: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(context_length, d_model))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.weight[positions]


def sinusoidal_table(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv[: d // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos table (the original Transformer); nothing to learn, not saved."""

    def __init__(self, context_length: int, d_model: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(context_length, d_model), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


def rope_cos_sin(n: int, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (n, head_dim) for positions 0..n-1."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)  # (n, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (n, D): pair i with i + D/2
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated by position: x * cos + rotate_half(x) * sin."""
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)
