"""Causal language modelling.

By the chain rule, P(x_1..x_T) = prod_t P(x_t | x_<t). The model predicts each next token, and the
loss is the mean negative log-likelihood (cross-entropy, in nats):

    L = -(1/T) sum_t log P(x_t | x_<t) = -(1/T) sum_t log softmax(logits_t)[x_t]
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.objectives.linear_ce import linear_cross_entropy


def clm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """A model with a bias-free `lm_head` (every GPT) gives its final hidden states and the loss
    applies the head chunk by chunk (objectives/linear_ce.py: the full (B, T, V) logits are never
    held); any other model's logits go through the plain cross-entropy."""
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear) and head.bias is None:
        h = model(x, features_only=True)  # (B, T, C)
        return linear_cross_entropy(h.flatten(0, 1), head.weight, y.flatten(), reduction=reduction)
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction=reduction)


@torch.no_grad()
def clm_eval(model: nn.Module, batches, autocast=None) -> tuple[float, int]:
    """Summed NLL (nats) and token count over `batches` of (x, y), model in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with (autocast or contextlib.nullcontext)():
                total += clm_loss(model, x, y, reduction="sum").item()
            count += y.numel()
    finally:
        model.train(was_training)
    return total, count
