"""Growing a causal model's vocabulary, for tokens added to its tokenizer (a chat template's role tokens).

The embedding E (V, C) and the output head (tied to E, or its own (V, C)) get one row per new token.
A new row starts at the mean of the old rows rather than at random: its first logit is then about
the average token's, so the new tokens neither dominate the first steps' softmax nor start unreachable
(Hewitt 2021, "Initializing new word embeddings for pretrained language models").
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


def _grown(weight: torch.Tensor, n: int) -> torch.Tensor:
    new = weight.new_empty(n, weight.size(1))
    new[:weight.size(0)] = weight
    new[weight.size(0):] = weight.mean(0)
    return new


@torch.no_grad()
def grow_vocab(model: nn.Module, n: int) -> bool:
    """Give a GPT-shaped model (tok_emb, lm_head) `n` tokens when it has fewer; True when it grew."""
    V = model.tok_emb.weight.size(0)
    if n <= V:
        return False
    tied = model.lm_head.weight is model.tok_emb.weight
    emb = nn.Embedding(n, model.tok_emb.weight.size(1), device=model.tok_emb.weight.device,
                       dtype=model.tok_emb.weight.dtype)
    emb.weight.copy_(_grown(model.tok_emb.weight, n))
    head = nn.Linear(emb.weight.size(1), n, bias=False, device=emb.weight.device, dtype=emb.weight.dtype)
    if tied:
        head.weight = emb.weight
    else:
        head.weight.copy_(_grown(model.lm_head.weight, n))
    model.tok_emb, model.lm_head = emb, head
    model.config = dataclasses.replace(model.config, vocab_size=n)
    return True
