"""Sequence-to-sequence cross-entropy with teacher forcing and label smoothing.

The decoder reads the reference shifted one right (the start token first) and predicts each next
token; the loss is the mean over real target tokens (IGNORE marks padding). Label smoothing
(Szegedy et al. 2016; 0.1 in Vaswani et al. 2017) trains against a target that keeps 1 - eps on
the reference token and spreads eps evenly over the vocabulary of V tokens:

    q_v = (1 - eps) [v = y] + eps / V
    L = -sum_v q_v log p_v = (1 - eps) (-log p_y) + eps * mean_v(-log p_v)

so the model is never pushed to put all its mass on one token (less over-confident, better BLEU,
at the price of a higher perplexity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data import IGNORE
from lmforge.data.batches import shift_right  # noqa: F401 (teacher forcing's inputs; documented here)


def seq2seq_loss(model: nn.Module, batch: dict, label_smoothing: float = 0.0) -> torch.Tensor:
    """batch: src (B, S), src_mask (B, S) bool, tgt_in (B, T), labels (B, T) with IGNORE at padding."""
    logits = model(batch["src"], batch["tgt_in"], batch.get("src_mask"))  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE,
                           label_smoothing=label_smoothing)
