"""A task taught by a teacher: the same batches, evaluation and checkpoints as the task it wraps, with
objectives/distill.py's loss in place of the task's own. Language modelling (every next token is a
distribution over the vocabulary) and classification (every row one over the classes) are taught."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.objectives.classify import logits_of
from lmforge.objectives.distill import distill_loss


def outputs(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of a language-modelling batch (input_ids, targets) or a labelled one (labels)."""
    if "targets" in batch:
        return model(batch["input_ids"]), batch["targets"]
    if "labels" in batch:
        return logits_of(model, batch), batch["labels"]
    raise LmforgeError("distillation teaches language models and classifiers; this task's batches are neither")


class Distilled:
    """`task` with the loss alpha T^2 KL(teacher || student) + (1 - alpha) CE (objectives/distill.py)."""

    def __init__(self, task, teacher: nn.Module, temperature: float, alpha: float):
        self.task, self.teacher = task, teacher.eval()
        self.temperature, self.alpha = temperature, alpha
        for p in teacher.parameters():
            p.requires_grad_(False)

    def __getattr__(self, name):  # batches, evaluation, the headline, the data position: the task's own
        return getattr(self.task, name)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        logits, targets = outputs(model, batch)
        if self.alpha == 0:  # the control: no teacher needed
            return distill_loss(logits, logits, targets, self.temperature, 0.0)
        device = logits.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher_logits, _ = outputs(self.teacher, batch)
        return distill_loss(logits, teacher_logits, targets, self.temperature, self.alpha)
