"""The encoder-decoder Transformer (Vaswani et al. 2017), in the shapes of T5, BART and Marian.

    m   = Encoder(x)      h_0 = E[x] (* sqrt(d)) (+ P_enc),  h_l = Block_l(h_{l-1})     bidirectional
    y_t = Decoder(y_<t, m)  g_0 = E[y] (* sqrt(d)) (+ P_dec),  g_l = DecoderBlock_l(g_{l-1}, m)
                                                         causal self-attention, cross-attention over m, FFN
    logits = (g_L * d^-0.5 if T5's tied scaling) E^T (+ b)   one embedding matrix for source, target, output

Three attentions: the encoder's self-attention sees the whole source (padding hidden), the
decoder's sees the target so far, and cross-attention lets each target position read the source.
Positions are learned or sinusoidal tables per stack, or T5's relative buckets (a learned bias per
head on the scores, computed once per stack and shared by its layers). The decoder starts from
`config.decoder_start_id` and is trained by teacher forcing: it reads the reference shifted one
right and predicts each next token (objectives/seq2seq.py).

`encode` and `decode` are separate so that generation runs the encoder once and keeps the source's
cross-attention keys and values (`cross_kv`) for every step. forward(src, tgt) -> logits (B, T, V).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn import (Block, DecoderBlock, Dropout, LearnedPositions, RelativePositionBias, SinusoidalPositions,
                        init_weights, make_norm)


class Stack(nn.Module):
    """What the encoder and the decoder share: the embedding of ids at their positions, the position
    scheme, and (pre-norm) the final norm. The token embedding itself belongs to the model."""

    def __init__(self, cfg: ModelConfig, blocks: list[nn.Module], bidirectional: bool):
        super().__init__()
        self.config = cfg
        self.positions = None
        if cfg.position == "learned":
            self.positions = LearnedPositions(cfg.context_length, cfg.d_model)
        elif cfg.position == "sinusoidal":
            self.positions = SinusoidalPositions(cfg.context_length, cfg.d_model, cfg.sinusoidal_layout)
        self.rel_bias = (RelativePositionBias(cfg.n_head, cfg.relative_buckets, cfg.relative_max_distance,
                                              bidirectional) if cfg.position == "t5" else None)
        self.embed_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cfg.embed_norm else None
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(blocks)
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cfg.norm_position == "pre" else None

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Token vectors x (B, T, C) of positions start..start+T-1 -> the first layer's input."""
        T = x.size(1)
        if T and start + T > self.config.context_length:
            raise ValueError(f"a sequence of {start + T} tokens exceeds the context of {self.config.context_length}")
        if self.config.embed_scale:
            x = x * math.sqrt(self.config.d_model)
        if self.positions is not None:
            x = x + self.positions(torch.arange(start, start + T, device=x.device))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.drop(x)

    def bias(self, t: int, s: int, start: int = 0) -> torch.Tensor | None:
        return None if self.rel_bias is None else self.rel_bias(t, s, start)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.norm is None else self.drop(self.norm(x))


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = Stack(cfg, [Block(cfg, causal=False) for _ in range(cfg.n_layer)], bidirectional=True)
        self.decoder = Stack(cfg, [DecoderBlock(cfg) for _ in range(cfg.n_decoder_layer)], bidirectional=False)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if cfg.logits_bias:  # a buffer, not a parameter: saved with the weights, never trained (as in BART)
            self.register_buffer("final_logits_bias", torch.zeros(cfg.vocab_size))
        self.init_weights()

    def init_weights(self) -> None:
        """BART's scheme, N(0, init_std) weights with zero biases and unit norms; or, when the attention
        scale is folded into W_q (T5: attention_scale set), T5's variance-keeping scheme, each weight
        N(0, 1 / fan_in) so that every layer's output has the variance of its input:

            embedding  N(0, 1)                 (the tied output divides by sqrt(d) again)
            W_q        N(0, 1 / (d d_k)) / s   (s = attention_scale: Q K^T needs no 1 / sqrt(d_k))
            W_k, W_v   N(0, 1 / d)             W_o    N(0, 1 / (H d_k))
            W_in       N(0, 1 / d)             W_out  N(0, 1 / d_ff)
            relative position biases, untied output   N(0, 1 / d)

        Without it, N(0, 0.02) weights and no 1 / sqrt(d_k) leave the attention scores near zero,
        attention uniform, and learning slow."""
        cfg = self.config
        init_weights(self, cfg.init_std)
        if cfg.attention_scale is None:
            return
        d, dk = cfg.d_model, cfg.head_dim
        std = {"tok_emb.weight": 1.0, "lm_head.weight": d ** -0.5, "rel_bias.weight": d ** -0.5,
               "attn.proj.weight": (cfg.n_head * dk) ** -0.5, "cross.proj.weight": (cfg.n_head * dk) ** -0.5,
               "cross.q.weight": (d * dk) ** -0.5 / cfg.attention_scale, "cross.kv.weight": d ** -0.5,
               "mlp.proj.weight": cfg.d_ff ** -0.5, "mlp.fc.weight": d ** -0.5, "mlp.gate.weight": d ** -0.5,
               "mlp.up.weight": d ** -0.5}
        with torch.no_grad():
            for name, p in self.named_parameters():  # a tied output is the embedding: set once, by its own name
                rule = next((v for k, v in std.items() if name.endswith(k)), None)
                if name.endswith("attn.qkv.weight"):  # q rows, then k and v rows
                    q = cfg.n_head * dk
                    p[:q].normal_(0.0, (d * dk) ** -0.5 / cfg.attention_scale)
                    p[q:].normal_(0.0, d ** -0.5)
                elif rule is not None:
                    p.normal_(0.0, rule)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
               need_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Source ids (B, S), src_mask (B, S) bool True at real tokens -> memory (B, S, C)."""
        S = src.size(1)
        x = self.encoder.embed(self.tok_emb(src), 0)
        mask = None if src_mask is None else src_mask[:, None, None, :]  # (B, 1, 1, S): hide padding keys
        bias = self.encoder.bias(S, S)
        weights = []
        for block in self.encoder.blocks:
            x, w = block(x, None, mask, None, need_weights, bias)
            weights.append(w)
        memory = self.encoder.finish(x)
        return (memory, weights) if need_weights else memory

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of the memory: computed once per source."""
        return [block.cross.memory_kv(memory) for block in self.decoder.blocks]

    def decode(
        self,
        tgt: torch.Tensor,  # (B, T) decoder input ids: the start token, then the target so far
        memory: torch.Tensor | None = None,  # (B, S, C) encoder output (or give cross_kv)
        src_mask: torch.Tensor | None = None,  # (B, S) bool, True at real source tokens
        start_pos: int = 0,  # position of tgt[:, 0] (non-zero when decoding with a cache)
        cache=None,  # per-layer self-attention caches: cache[l].update(k, v)
        cross_kv: list | None = None,  # from cross_kv(memory): skips recomputing the source's keys/values
        need_weights: bool = False,
        features_only: bool = False,  # return the final states (B, T, C) before the output projection
    ):
        """-> logits (B, T, V) [, per layer (self-attention, cross-attention) weights]."""
        T = tgt.size(1)
        if cross_kv is None:
            cross_kv = self.cross_kv(memory)
        x = self.decoder.embed(self.tok_emb(tgt), start_pos)
        mask = None if src_mask is None else src_mask[:, None, None, :]
        bias = self.decoder.bias(T, start_pos + T, start_pos)
        weights = []
        for i, block in enumerate(self.decoder.blocks):
            x, w = block(x, cross_kv[i], mask, None if cache is None else cache[i], need_weights, bias)
            weights.append(w)
        h = self.decoder.finish(x)
        if features_only:
            return (h, weights) if need_weights else h
        logits = self.project(h)
        return (logits, weights) if need_weights else logits

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Final decoder states (..., C) -> logits (..., V)."""
        if self.config.tie_embeddings and self.config.tied_output_scale:
            h = h * self.config.d_model ** -0.5  # T5: the tied matrix is the embedding, scaled back down
        logits = self.lm_head(h)
        return logits + self.final_logits_bias if self.config.logits_bias else logits

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
                features_only: bool = False) -> torch.Tensor:
        """Teacher forcing: source ids (B, S) and decoder inputs (B, T) -> logits (B, T, V)."""
        memory = self.encode(src, src_mask)
        return self.decode(tgt, memory, src_mask, features_only=features_only)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # the shared, tied embedding is counted once
        return n - self.tok_emb.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per target token, taking the source as long as the target: 6 N + attention
        (12 L T C for each stack's self-attention, and as much again for cross-attention)."""
        cfg = self.config
        t = seq_len or cfg.context_length
        n = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.d_model
        return 6 * n + 12 * (cfg.n_layer + 2 * cfg.n_decoder_layer) * t * cfg.d_model
