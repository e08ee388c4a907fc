"""Fine-tuning losses for the task heads (models/heads.py).

    sequence:  L = -(1/B) sum_b w_{y_b} log softmax(z_b)[y_b] / mean_b(w_{y_b})     (w = 1 unweighted)
    token:     the same over every labelled token (-100 marks tokens without a label)
    span (QA): L = (CE(start_logits, s) + CE(end_logits, e)) / 2

Class weights w_c = n / (C n_c) (inverse frequency, "balanced") make a rare class count as much as a
common one; the weighted mean divides by the summed weights, as torch's weighted cross-entropy does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data import IGNORE


def logits_of(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))


def balanced_class_weights(counts: list[int]) -> torch.Tensor:
    """w_c = n / (C n_c): the inverse of each class's share, 1 when classes are even."""
    counts_t = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    return counts_t.sum() / (len(counts) * counts_t)


def sequence_loss(model: nn.Module, batch: dict, class_weights: torch.Tensor | None = None):
    logits = logits_of(model, batch).float()  # (B, C) or (B, T, C)
    labels = batch["labels"]
    w = None if class_weights is None else class_weights.to(logits.device)
    loss = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), weight=w, ignore_index=IGNORE)
    return loss, logits


def span_loss(model: nn.Module, batch: dict):
    logits = logits_of(model, batch).float()  # (B, T, 2)
    start, end = logits.unbind(-1)
    loss = (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
    return loss, logits
