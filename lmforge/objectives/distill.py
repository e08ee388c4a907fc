"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student learns the teacher's whole
distribution over the answers, not only which one is right.

At temperature T the teacher's and the student's logits z_t, z_s give the softened distributions
p = softmax(z_t / T) and q = softmax(z_s / T), and the loss is

    L = alpha T^2 KL(p || q) + (1 - alpha) CE(y, softmax(z_s))

    KL(p || q) = sum_i p_i (log p_i - log q_i)

A higher T spreads p over more answers, so the student also learns which wrong answers the teacher
finds nearly right (the "dark knowledge"). The soft term's gradient shrinks as 1 / T^2, which the
factor T^2 undoes, so alpha weighs the two terms the same at any T. alpha = 0 is plain training on
the labels: the control a distillation is measured against.

Each position (a token of a language model, a row of a classifier) is one distribution; positions
whose label is `ignore_index` count in neither term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(z_t / T) || softmax(z_s / T)) per position, shape (...,)."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return temperature ** 2 * (log_p.exp() * (log_p - log_q)).sum(-1)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float = 2.0, alpha: float = 0.5, ignore_index: int = IGNORE) -> torch.Tensor:
    """alpha T^2 KL(p || q) + (1 - alpha) CE(y, z_s), each the mean over the positions with a label."""
    logits = student_logits.flatten(0, -2)
    keep = targets.flatten() != ignore_index
    hard = F.cross_entropy(logits.float(), targets.flatten(), ignore_index=ignore_index)
    if alpha == 0:
        return hard
    soft = soft_loss(logits[keep], teacher_logits.flatten(0, -2)[keep], temperature).mean()
    return alpha * soft + (1 - alpha) * hard
