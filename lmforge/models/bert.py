"""BERT: a bidirectional Transformer encoder pretrained by masked LM and next-sentence prediction
(Devlin et al. 2019).

    h_0 = LayerNorm(E_tok[x] + E_pos[p] + E_seg[s])      token + position + segment (sentence A/B)
    h_l = Block_l(h_{l-1}),  l = 1..L                    bidirectional self-attention, post-norm
    pooled = tanh(W_p h_L[CLS] + b_p)                    the pooler: one vector for the whole input
    MLM:  logits_t = LayerNorm(GELU(W_t h_L,t + b_t)) E_tok^T + b_v    tied to the token embeddings
    NSP:  logits = W_nsp pooled + b_nsp                  (0: B follows A, 1: B is a random sentence)

Padding is hidden from attention by a key mask (none where a batch has no padding). With `embedding_size` < d_model the embeddings are
factorised (E x V plus an E -> d_model projection), which ELECTRA's generator uses to share the
discriminator's embeddings. forward(ids) -> hidden states (B, T, d_model); the losses live in
objectives/.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn import Block, Dropout, init_weights, make_norm


class Embeddings(nn.Module):
    """Sum of token, learned position and segment embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e = cfg.embedding_size
        self.tok = nn.Embedding(cfg.vocab_size, e)
        self.pos = nn.Embedding(cfg.context_length, e)
        self.seg = nn.Embedding(cfg.type_vocab_size, e)
        self.norm = make_norm(cfg.norm, e, cfg.norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = ids.size(1)
        x = self.tok(ids) + self.pos(torch.arange(T, device=ids.device))  # (B, T, E)
        x = x + self.seg(torch.zeros_like(ids) if token_type_ids is None else token_type_ids)
        return self.drop(self.norm(x))


class MaskedLMHead(nn.Module):
    """logits = LayerNorm(GELU(h W + b)) E_tok^T + b_v: a transform, then the tied embedding matrix."""

    def __init__(self, cfg: ModelConfig, tok: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.embedding_size)
        self.norm = make_norm(cfg.norm, cfg.embedding_size, cfg.norm_eps)
        self.tok = [tok]  # held in a list so the tied matrix is saved once, with the embeddings
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., V)
        return F.linear(self.norm(F.gelu(self.dense(h))), self.tok[0].weight, self.bias)


class Bert(nn.Module):
    def __init__(self, cfg: ModelConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.config = cfg
        self.embeddings = embeddings or Embeddings(cfg)  # ELECTRA's generator is handed the discriminator's
        if cfg.embedding_size != cfg.d_model:
            self.embed_proj = nn.Linear(cfg.embedding_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlm_head = MaskedLMHead(cfg, self.embeddings.tok)
        self.nsp_head = nn.Linear(cfg.d_model, 2)
        self.init_weights()  # shared embeddings are drawn again from the same N(0, 0.02): harmless

    def init_weights(self) -> None:
        """BERT initialisation: N(0, 0.02) weights and embeddings, zero biases, unit norm gains."""
        init_weights(self, self.config.init_std)

    def forward(
        self,
        ids: torch.Tensor,  # (B, T) token ids
        token_type_ids: torch.Tensor | None = None,  # (B, T) 0 for sentence A, 1 for B
        attention_mask: torch.Tensor | None = None,  # (B, T) True (or 1) at real tokens, False at padding
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        T = ids.size(1)
        if T > self.config.context_length:
            raise ValueError(f"sequence of {T} tokens exceeds the context of {self.config.context_length}")
        x = self.embeddings(ids, token_type_ids)  # (B, T, E)
        if hasattr(self, "embed_proj"):
            x = self.embed_proj(x)  # (B, T, C)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):  # every query may look at every real key
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        # a batch without padding passes no mask: attention then runs on SDPA's fused kernel
        weights = []
        for block in self.blocks:
            x, w = block(x, mask=mask, need_weights=need_weights)
            weights.append(w)
        return (x, weights) if need_weights else x

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """tanh(W_p h[CLS] + b_p): (B, T, C) -> (B, C)."""
        return torch.tanh(self.pooler(h[:, 0]))

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlm_head(h)

    def nsp_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, 2): is sentence B the one that follows A (0) or a random one (1)?"""
        return self.nsp_head(self.pool(h))

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for p in self.embeddings.parameters())
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token, 6 N + 12 L T C (N: non-embedding weights), as for GPT."""
        cfg = self.config
        t = seq_len or cfg.context_length
        return 6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * t * cfg.d_model
