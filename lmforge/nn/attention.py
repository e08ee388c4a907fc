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

from lmforge.nn.dropout import Dropout, drawn_here
from lmforge.nn.dropout import dropout as apply_dropout
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


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      scale: float | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale + bias) with masked positions at -inf; scale defaults to 1 / sqrt(d_k).
    q (..., T, D), k (..., S, D) -> (..., T, S)."""
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.size(-1)) if scale is None else scale)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
    scale: float | None = None, bias: torch.Tensor | None = None, dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit path: returns (dropout(softmax(Q K^T / sqrt(d_k) + M)) V, the weights before dropout)."""
    w = attention_weights(q, k, mask, scale, bias)
    return apply_dropout(w, dropout) @ v, w


EXPLICIT_KEYS = 256  # see explicit_is_faster


def explicit_is_faster(q: torch.Tensor, keys: int, bias: torch.Tensor | None) -> bool:
    """Whether the explicit path trains faster than the fused kernel here. Measured on a CPU (torch 2.13,
    forward and backward, heads of 64): with a learned bias (T5's positions) the fused kernel's gradient
    for its additive mask makes it 1.6-2.3x slower at 48 keys, float32 or bfloat16; under bfloat16
    autocast the explicit path wins with or without a mask up to 256 keys (48 keys: 3-5x, 128: 2.8x,
    256: 1.3x) and loses beyond (1,024 keys: 0.66x). Decoding (no gradient) keeps the fused kernel."""
    if q.device.type != "cpu" or not (torch.is_grad_enabled() and q.requires_grad):
        return False
    if bias is not None and bias.requires_grad:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16 \
        and keys <= EXPLICIT_KEYS


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
           causal: bool = False, need_weights: bool = False, dropout: float = 0.0, scale: float | None = None,
           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention over prepared heads, by the fused kernel or (need_weights) the explicit path.

    q (B, H, T, D); k, v (B, G, S, D) with G key/value heads; mask bool, broadcastable to (B, H, T, S),
    True = may attend; bias: added to the scores (T5's relative positions), broadcastable likewise.
    A causal layer whose T queries are the last T of S keys sees keys up to its own position.
    Returns y (B, H, T, D) and the (B, H, T, S) weights when asked for.
    """
    H, G, T, S = q.size(1), k.size(1), q.size(2), k.size(2)
    # the explicit path: for the weights, for lmforge's dropout on them, or where it is measured faster
    explicit = need_weights or drawn_here(q, dropout) or explicit_is_faster(q, S, bias)
    if causal and (explicit or mask is not None or bias is not None or 1 < T < S):  # one new query sees every key
        cm = causal_mask(T, S, device=q.device)
        mask = cm if mask is None else mask & cm
    if explicit:
        if G != H:  # each key/value head serves H / G consecutive query heads
            k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
        y, w = scaled_dot_product_attention(q, k, v, mask, scale, bias, dropout)
        return y, (w if need_weights else None)
    if bias is not None:  # the kernel takes one additive mask: the bias, -inf where the mask forbids
        bias = bias.to(q.dtype)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    # a causal mask not built above is the square one the fused kernel makes itself
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal and mask is None
                                       and T == S, enable_gqa=G != H, scale=scale)
    return y, None


class Attention(nn.Module):
    """Self-attention with one fused QKV projection; optional RoPE; a KV cache slots in via `cache`."""

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, causal: bool = True,
                 bias: bool = True, dropout: float = 0.0, scale: float | None = None, head_dim: int | None = None):
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = head_dim or d_model // n_head  # narrower heads than d_model / n_head once some are pruned
        self.causal = causal
        self.dropout = dropout
        self.scale = scale  # None: 1 / sqrt(head_dim)
        self.qkv = nn.Linear(d_model, (n_head + 2 * n_kv_head) * self.head_dim, bias=bias)
        self.proj = nn.Linear(n_head * self.head_dim, d_model, bias=bias)
        self.proj_dropout = Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin: (T, D)
        mask: torch.Tensor | None = None,  # bool, broadcastable to (B, H, T, S): True = may attend
        cache=None,  # object with .update(k, v) -> (k_all, v_all), optionally .attend; the engine owns its position
        need_weights: bool = False,
        position_bias: torch.Tensor | None = None,  # (1 or B, H, T, S) added to the scores (T5)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape
        H, G, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.qkv(x).split([H * D, G * D, G * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
        v = v.view(B, T, G, D).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None and T == 1 and mask is None and not need_weights and hasattr(cache, "attend"):
            # a cache that reads its rows' histories itself (beams sharing theirs: generate/cpu/shared_history.py)
            y, w = cache.attend(q, k, v, position_bias, self.scale), None
        else:
            if cache is not None:
                k, v = cache.update(k, v)  # (B, G, S, D), S = cached + T
            y, w = attend(q, k, v, mask, causal=self.causal, need_weights=need_weights, scale=self.scale,
                          dropout=self.dropout if self.training else 0.0, bias=position_bias)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # concatenate the heads
        return self.proj_dropout(self.proj(y)), w


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention (Vaswani et al. 2017, 3.2.3): queries from the decoder's states x,
    keys and values from the encoder's output ("memory"), so every target position can look at every
    source position:  CrossAttn(x, m) = softmax((x W^Q)(m W^K)^T / sqrt(d_k) + M_src) (m W^V) W^O.

    The memory does not change while a target is decoded, so its keys and values are computed once
    (`memory_kv`) and passed back in at every step. They may be given once per source for n decoder
    rows each (B = n x sources, rows i*n .. i*n + n - 1 reading source i: beams, or samples): the n rows'
    queries then attend as n x T queries of one row, so no source's keys are copied per beam."""

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, bias: bool = True, dropout: float = 0.0,
                 scale: float | None = None, head_dim: int | None = None):
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = head_dim or d_model // n_head
        self.dropout, self.scale = dropout, scale
        self.q = nn.Linear(d_model, n_head * self.head_dim, bias=bias)
        self.kv = nn.Linear(d_model, 2 * n_kv_head * self.head_dim, bias=bias)
        self.proj = nn.Linear(n_head * self.head_dim, d_model, bias=bias)
        self.proj_dropout = Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder output (B, S, C) -> its keys and values, each (B, G, S, D)."""
        B, S, _ = memory.shape
        k, v = self.kv(memory).view(B, S, 2, self.n_kv_head, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C) decoder states
        memory_kv: tuple[torch.Tensor, torch.Tensor],  # from memory_kv(encoder output)
        mask: torch.Tensor | None = None,  # bool, broadcastable to (B, H, T, S): False at source padding
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape
        if hasattr(memory_kv, "attend"):  # keys that know which source each row reads (generate/cpu/shared_history.py)
            if need_weights:
                raise ValueError("the compiled cross-attention keeps no weights; decode with backend='torch' for them")
            q = self.q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
            y = memory_kv.attend(q, self.scale).transpose(1, 2).reshape(B, T, -1)
            return self.proj_dropout(self.proj(y)), None
        H, D, sources = self.n_head, self.head_dim, memory_kv[0].size(0)
        n = B // sources  # decoder rows per source
        if n * sources != B:
            raise ValueError(f"{B} decoder rows cannot share the keys/values of {sources} sources evenly")
        q = self.q(x).view(sources, n, T, H, D).permute(0, 3, 1, 2, 4).reshape(sources, H, n * T, D)
        y, w = attend(q, *memory_kv, mask, need_weights=need_weights, scale=self.scale,
                      dropout=self.dropout if self.training else 0.0)
        y = y.view(sources, H, n, T, D).permute(0, 2, 3, 1, 4).reshape(B, T, H * D)
        if w is not None:  # (sources, H, n * T, S) -> (B, H, T, S)
            w = w.view(sources, H, n, T, -1).transpose(1, 2).reshape(B, H, T, -1)
        return self.proj_dropout(self.proj(y)), w
