"""Masked language modelling and next-sentence prediction: BERT's pretraining (Devlin et al. 2019).

MLM: about 15% of the tokens are chosen (data/masking.py: 80% become [MASK], 10% a random token,
10% stay); the model predicts the original token at exactly those positions M:

    L_MLM = -(1/|M|) sum_{t in M} log softmax(logits_t)[x_t]

NSP: from the pooled [CLS] vector, is sentence B the one that followed A in the document (label 0)
or a sentence from another document (label 1)?

    L_NSP = -log softmax(W_nsp pooled)[is_random]

BERT minimises L = L_MLM + L_NSP. Only the chosen positions go through the vocabulary-sized output
layer: the other 85% have no target, so computing their logits would be wasted work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data import IGNORE


def encode(model: nn.Module, batch: dict) -> torch.Tensor:
    """The encoder's hidden states (B, T, C) for a batch dict."""
    return model(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))


def masked_lm_loss(model: nn.Module, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Cross-entropy at the masked positions only; stats hold the correct count and the count."""
    chosen = labels != IGNORE  # (B, T)
    logits = model.mlm_logits(h[chosen])  # (M, V)
    targets = labels[chosen]
    loss = F.cross_entropy(logits.float(), targets) if targets.numel() else h.sum() * 0.0
    return loss, {"mlm_loss": loss.detach(), "mlm_correct": (logits.argmax(-1) == targets).sum(),
                  "mlm_count": torch.tensor(targets.numel())}


def next_sentence_loss(model: nn.Module, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    logits = model.nsp_logits(h)  # (B, 2)
    loss = F.cross_entropy(logits.float(), labels)
    return loss, {"nsp_loss": loss.detach(), "nsp_correct": (logits.argmax(-1) == labels).sum(),
                  "nsp_count": torch.tensor(labels.numel())}


def mlm_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    """L_MLM (+ L_NSP when the batch has `next_sentence_label`) for a BERT, and counts for metrics."""
    h = encode(model, batch)
    loss, stats = masked_lm_loss(model, h, batch["labels"])
    if "next_sentence_label" in batch:
        nsp, nsp_stats = next_sentence_loss(model, h, batch["next_sentence_label"])
        loss = loss + nsp
        stats.update(nsp_stats)
    return loss, stats
