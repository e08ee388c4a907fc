"""Multi-head attention (MHA) and grouped-query attention (GQA), causal or bidirectional.

Shapes: B batch, T query length, S key length, H query heads, G key/value heads, D head size.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
    MultiHead(x) = Concat(head_1, ..., head_H) W^O,   head_h = Attention(x W_h^Q, x W_h^K, x W_h^V)

M is 0 where a query may look and -inf where it may not (a causal mask hides the future).
With GQA, each of the G key/value heads is shared by H / G query heads.

Two paths compute the same numbers: `F.scaled_dot_product_attention` (fused, fast, no weights) and
`attention_weights` (explicit, returns the (B, H, T, S) weights for inspection).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.nn.positions import apply_rope


def causal_mask(t: int, s: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (T, S) mask, True where query i may attend to key j, i.e. j <= i + (S - T).

    With S > T (a cache of S - T earlier keys), query i sits at absolute position S - T + i.
    """
    s = t if s is None else s
    i = torch.arange(t, device=device).unsqueeze(1)
    j = torch.arange(s, device=device).unsqueeze(0)
    return j <= i + (s - t)


def padded_causal_mask(key_mask: torch.Tensor, t: int) -> torch.Tensor:
    """Causal mask for left-padded rows: (B, S) key mask (True = a real token) -> (B, 1, T, S).

    Query i may attend to key j when j is causally visible and j is a real token. A padding query
    sees no real key before it, so it is also let see itself: its output is discarded, but a row of
    all -inf would make softmax NaN, and the NaN would reach the real tokens through later layers.
    """
    s = key_mask.size(1)
    j = torch.arange(s, device=key_mask.device)
    own = j.unsqueeze(0) == torch.arange(t, device=key_mask.device).unsqueeze(1) + (s - t)  # (T, S)
    return ((causal_mask(t, s, key_mask.device) & key_mask[:, None, None, :]) | own).contiguous()


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_k)) with masked positions at -inf.  q (..., T, D), k (..., S, D) -> (..., T, S)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit path: returns (softmax(Q K^T / sqrt(d_k) + M) V, the weights)."""
    w = attention_weights(q, k, mask)
    return w @ v, w


class Attention(nn.Module):
    """Self-attention with one fused QKV projection; optional RoPE; a KV cache slots in via `cache`."""

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, causal: bool = True,
                 bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = d_model // n_head
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, (n_head + 2 * n_kv_head) * self.head_dim, bias=bias)
        self.proj = nn.Linear(n_head * self.head_dim, d_model, bias=bias)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin: (T, D)
        mask: torch.Tensor | None = None,  # bool, broadcastable to (B, H, T, S): True = may attend
        cache=None,  # object with .update(k, v) -> (k_all, v_all); the engine owns its position
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape
        H, G, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.qkv(x).split([H * D, G * D, G * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
        v = v.view(B, T, G, D).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, G, S, D), S = cached + T
        S = k.size(2)
        if self.causal and (need_weights or mask is not None or 1 < T < S):  # one new query sees every key
            cm = causal_mask(T, S, device=x.device)
            mask = cm if mask is None else mask & cm
        w = None
        if need_weights:
            if G != H:  # each key/value head serves H / G consecutive query heads
                k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
            y, w = scaled_dot_product_attention(q, k, v, mask)
        else:  # a causal mask not built above is the square one the fused kernel makes itself
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=self.causal and mask is None and T == S, enable_gqa=G != H)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # concatenate the heads
        return self.proj_dropout(self.proj(y)), w
