"""Task heads over one base model: the base reads the text, a small layer answers the task.

    classify:  logits = W dropout(r) + b,  r = pooled [CLS] (encoders) or the last real token's
               hidden state (decoders, which only see leftwards)           (B, num_labels)
    token:     logits_t = W dropout(h_t) + b                               (B, T, num_labels)
    qa:        [start_t, end_t] = W h_t + b                                (B, T, 2): a span's start and end

Inputs are right-padded; `attention_mask` (B, T) is True at real tokens. The base is any family
(`config.family`); an ELECTRA run is fine-tuned through its discriminator, a plain BERT encoder.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.models.bert import Bert
from lmforge.models.electra import Electra
from lmforge.models.gpt import GPT
from lmforge.nn import Dropout, init_weights

BASES: dict[str, type[nn.Module]] = {"gpt": GPT, "bert": Bert, "electra": Electra}


def base_config(cfg: ModelConfig) -> ModelConfig:
    return dataclasses.replace(cfg, head="none", labels=[])


class TaskModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.base = BASES[cfg.family](base_config(cfg))
        n_out = 2 if cfg.head == "qa" else len(cfg.labels)
        self.dropout = Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.d_model, n_out)
        init_weights(self.head, cfg.init_std)

    def forward(self, ids, token_type_ids=None, attention_mask=None, need_weights: bool = False):
        if self.config.causal:  # right padding is never seen by the real tokens before it: no mask needed
            out = self.base(ids, need_weights=need_weights, features_only=True)
        else:
            out = self.base(ids, token_type_ids, attention_mask, need_weights)
        h, weights = out if need_weights else (out, None)  # (B, T, C)
        logits = self.head(self.dropout(self._reduce(h, attention_mask)))
        return (logits, weights) if need_weights else logits

    def _reduce(self, h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.config.head != "classify":
            return h
        if not self.config.causal:
            return self.base.pool(h) if isinstance(self.base, Bert) else h[:, 0]
        last = (attention_mask.long().sum(1) - 1) if attention_mask is not None else \
            torch.full((h.size(0),), h.size(1) - 1, device=h.device)
        return h[torch.arange(h.size(0), device=h.device), last]  # (B, C)

    def num_params(self, non_embedding: bool = False) -> int:
        return self.base.num_params(non_embedding) + sum(p.numel() for p in self.head.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        return self.base.flops_per_token(seq_len)


def build_head(cfg: ModelConfig) -> TaskModel:
    return TaskModel(cfg)
