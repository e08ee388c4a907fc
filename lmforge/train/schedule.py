"""Learning-rate schedules: a linear warmup, then cosine / linear decay to `min_lr`, or constant.

    warmup (s < W):  lr(s) = lr_max * (s + 1) / W
    cosine:          lr(s) = min_lr + (lr_max - min_lr) * (1 + cos(pi * p)) / 2,  p = (s - W) / (S - W)
    linear:          lr(s) = lr_max - (lr_max - min_lr) * p
"""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup: int, total: int, kind: str = "cosine") -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    if kind == "constant":
        return lr
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return lr - (lr - min_lr) * p
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
