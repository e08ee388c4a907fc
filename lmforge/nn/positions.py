"""Position information: learned, sinusoidal, and rotary (RoPE).

Sinusoidal (Vaswani et al. 2017):  PE(p, 2i) = sin(p / 10000^(2i/d)),  PE(p, 2i+1) = cos(p / 10000^(2i/d)).
Marian's checkpoints hold the same numbers in another order ("halves"): all the sines, then all the cosines.
RoPE (Su et al. 2021): rotate each pair of query/key features by an angle p * theta_i with
theta_i = base^(-2i/D), so q_m . k_n depends only on m - n. Pairs are (x_i, x_{i+D/2}) ("rotate half"),
the layout Llama checkpoints use:  rope(x) = x * cos + rotate_half(x) * sin.
T5 relative positions (Raffel et al. 2020): no position vectors at all; each head adds a learned
scalar b_h(bucket(j - i)) to the score of query i and key j (see `relative_bucket`).
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


def sinusoidal_table(n: int, d: int, layout: str = "interleaved") -> torch.Tensor:
    """(n, d): sin and cos of p / 10000^(2i/d), interleaved (features 2i, 2i+1) or in halves (Marian: the
    ceil(d/2) sines first, then the floor(d/2) cosines)."""
    pos = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # float64: exact angles at long positions
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    sin, cos = torch.sin(pos * inv), torch.cos(pos * inv[: d // 2])
    if layout == "halves":
        return torch.cat([sin, cos], dim=1).float()
    table = torch.zeros(n, d, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = sin, cos
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos table (the original Transformer); nothing to learn, not saved."""

    def __init__(self, context_length: int, d_model: int, layout: str = "interleaved"):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(context_length, d_model, layout), persistent=False)

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


def relative_bucket(rel: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of each relative position rel = key - query (an integer tensor) -> bucket ids.

    A bidirectional stack (the encoder) gives half the buckets to keys after the query, half to those
    before; a causal one (the decoder) uses all of them for the past. Within a half of n buckets, the
    first n/2 distances each get their own bucket and larger distances share log-spaced ones:

        bucket(d) = d                                                      d < n/2
        bucket(d) = min(n - 1, n/2 + floor(log(d / (n/2)) / log(max_distance / (n/2)) * (n - n/2)))   otherwise
    """
    n, bucket = num_buckets, torch.zeros_like(rel)
    if bidirectional:
        n //= 2
        bucket = (rel > 0).long() * n  # keys after the query use the upper half
        dist = rel.abs()
    else:
        dist = (-rel).clamp(min=0)  # the future is masked anyway: it shares bucket 0
    exact = n // 2
    log_ratio = torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (n - exact)).long()).clamp(max=n - 1)
    return bucket + torch.where(dist < exact, dist, far)


class RelativePositionBias(nn.Module):
    """One learned scalar per (bucket, head), added to the attention scores of every layer of a stack.

    forward(T, S, start) -> (1, H, T, S): the bias for T queries at positions start..start+T-1 over
    S keys at positions 0..S-1."""

    def __init__(self, n_head: int, num_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.weight = nn.Parameter(torch.zeros(num_buckets, n_head))

    def forward(self, t: int, s: int, start: int = 0) -> torch.Tensor:
        q = torch.arange(start, start + t, device=self.weight.device)
        k = torch.arange(s, device=self.weight.device)
        buckets = relative_bucket(k[None, :] - q[:, None], self.bidirectional, self.num_buckets, self.max_distance)
        return self.weight[buckets].permute(2, 0, 1).unsqueeze(0)  # (T, S, H) -> (1, H, T, S)
