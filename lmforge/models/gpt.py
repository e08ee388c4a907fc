"""GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019).

    h_0 = E[x] (+ P[positions])                      token embeddings (+ learned/sinusoidal positions)
    h_l = Block_l(h_{l-1}),  l = 1..L                causal self-attention + feed-forward
    logits = Norm(h_L) E^T                           output projection tied to the embeddings

The same class builds Llama-style models (RoPE inside attention, RMSNorm, SwiGLU, GQA, untied head)
from `ModelConfig` switches. forward(ids) -> logits (B, T, vocab); the loss lives in objectives/.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn import (Block, Dropout, LearnedPositions, SinusoidalPositions, init_weights, make_norm,
                        padded_causal_mask, rope_cos_sin)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = None
        if cfg.position == "learned":
            self.pos_emb = LearnedPositions(cfg.context_length, cfg.d_model)
        elif cfg.position == "sinusoidal":
            self.pos_emb = SinusoidalPositions(cfg.context_length, cfg.d_model, cfg.sinusoidal_layout)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if cfg.position == "rope":
            cos, sin = rope_cos_sin(cfg.context_length, cfg.head_dim, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), zero biases, unit norms, residual projections / sqrt(2L)."""
        init_weights(self, self.config.init_std, residual_layers=self.config.n_layer)

    def forward(
        self,
        ids: torch.Tensor,  # (B, T) token ids
        start_pos: int = 0,  # absolute position of ids[:, 0] (non-zero when decoding with a cache)
        cache=None,  # per-layer caches: cache[l].update(k, v)
        need_weights: bool = False,
        attention_mask: torch.Tensor | None = None,  # (B, S) bool, False at left padding; S = start_pos + T
        features_only: bool = False,  # return Norm(h_L) (B, T, C), for a loss that applies the head itself
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        B, T = ids.shape
        if start_pos + T > self.config.context_length and self.config.position != "none":
            raise ValueError(f"sequence of {start_pos + T} tokens exceeds the context of {self.config.context_length}")
        x = self.tok_emb(ids)  # (B, T, C)
        mask = None
        if attention_mask is None:
            positions = torch.arange(start_pos, start_pos + T, device=ids.device)  # (T,)
        else:  # a row's first real token is its position 0, however much padding precedes it
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]  # (B, T)
            mask = padded_causal_mask(attention_mask, T)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        x = self.drop(x)
        rope = None
        if self.config.position == "rope":
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (T, D) or (B, T, D)
            rope = (cos, sin) if positions.dim() == 1 else (cos.unsqueeze(1), sin.unsqueeze(1))
        weights = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, rope, mask, None if cache is None else cache[i], need_weights)
            weights.append(w)
        h = self.norm(x)  # (B, T, C)
        if features_only:
            return (h, weights) if need_weights else h
        logits = self.lm_head(h)  # (B, T, V)
        return (logits, weights) if need_weights else logits

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # a tied head is counted once
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None and isinstance(self.pos_emb, LearnedPositions):
                n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6 N + 12 L T C (Kaplan et al.; PaLM appendix B).

        N counts the non-embedding weights plus the output projection; the second term is attention's
        Q K^T and weights-times-V at sequence length T, which no parameter count sees.
        """
        cfg = self.config
        t = seq_len or cfg.context_length
        n = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.d_model  # the lm_head matmul
        return 6 * n + 12 * cfg.n_layer * t * cfg.d_model
