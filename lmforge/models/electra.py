"""ELECTRA: pretraining an encoder as a discriminator of replaced tokens (Clark et al. 2020).

A small generator G (a BERT trained by masked LM) fills the masked positions with its own samples;
the discriminator D (a BERT-shaped encoder, the model that is kept) labels every token of the
result as original or replaced:

    x_masked = mask(x)                                 15% of positions, as for BERT
    x_hat_t ~ p_G(x_t | x_masked)  at masked t         sampled: no gradient flows through the sample
    x_corrupt = x with x_hat at the masked positions
    D(x_corrupt)_t = sigmoid(w^T GELU(W h_t + b))      probability that token t was replaced
    L = L_MLM(G) + lambda * L_RTD(D),  L_RTD = mean over real tokens of the binary cross-entropy

A sample equal to the original counts as original. The generator is `generator_scale` of the
discriminator's width (1/4 in the paper) with the same depth, and both share the token, position
and segment embeddings (the generator projects them to its width). Only the discriminator is
fine-tuned; the generator is thrown away.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.models.bert import Bert
from lmforge.nn import init_weights


def generator_config(cfg: ModelConfig) -> ModelConfig:
    """The generator's shape: the discriminator's depth, scaled width and heads, same embeddings."""
    width, heads = cfg.generator_width_heads()
    return dataclasses.replace(cfg, family="bert", d_model=width, n_head=heads, n_kv_head=heads,
                               d_ff=max(1, round(cfg.d_ff * cfg.generator_scale)), head="none", labels=[])


def discriminator_config(cfg: ModelConfig) -> ModelConfig:
    """The discriminator as a plain BERT-family encoder: what fine-tuning loads."""
    return dataclasses.replace(cfg, family="bert", head="none", labels=[])


class ReplacedTokenHead(nn.Module):
    """logit_t = w^T GELU(W h_t + b) + c: > 0 means "replaced"."""

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T)
        return self.out(F.gelu(self.dense(h))).squeeze(-1)


class Electra(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.discriminator = Bert(discriminator_config(cfg))
        self.generator = Bert(generator_config(cfg), embeddings=self.discriminator.embeddings)
        self.rtd_head = ReplacedTokenHead(cfg.d_model)
        init_weights(self.rtd_head, cfg.init_std)

    def forward(self, ids, token_type_ids=None, attention_mask=None, need_weights: bool = False):
        """The discriminator's hidden states (B, T, C): what a task head reads."""
        return self.discriminator(ids, token_type_ids, attention_mask, need_weights)

    def replaced_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.rtd_head(h)

    def num_params(self, non_embedding: bool = False) -> int:
        return sum(p.numel() for p in self.parameters()) - (
            sum(p.numel() for p in self.discriminator.embeddings.parameters()) if non_embedding else 0)

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Both networks train on every token: the generator's FLOPs plus the discriminator's."""
        return self.generator.flops_per_token(seq_len) + self.discriminator.flops_per_token(seq_len)
