"""Adafactor for weights that stack several projections: each block steps relative to its own size.

Adafactor (Shazeer & Stern 2018; torch.optim.Adafactor) moves a tensor W by a relative step,

    W <- W (1 - lr * weight_decay) - rho_t * max(eps2, RMS(W)) * U,     rho_t = min(lr, 1 / sqrt(t)),

with U the gradient normalised by its factored second moment. lmforge fuses projections into one
tensor (self-attention's W_q, W_k, W_v stacked by rows; cross-attention's W_k, W_v), and their sizes
differ: T5 folds the 1/sqrt(d_head) of attention into W_q's init, so in t5-mini W_q's entries have an
RMS of 0.0078 and the stack's is 0.051. One RMS over the stack would step W_q 6.5x as far, relative to
its size, as T5's separate tensors do. `BlockwiseAdafactor` rescales each block's share of the step by

    max(eps2, RMS(block)) / max(eps2, RMS(W)),

which is the relative step the block would take as a tensor of its own (the decay is left as it is).
"""

from __future__ import annotations

import torch
from torch import nn


def stacked_blocks(model: nn.Module) -> dict[torch.Tensor, list[int]]:
    """The model's tensors that stack several projections by rows -> each block's row count."""
    from lmforge.nn.attention import Attention, CrossAttention

    blocks: dict[torch.Tensor, list[int]] = {}
    for m in model.modules():
        if isinstance(m, (Attention, CrossAttention)):
            D, G = m.head_dim, m.n_kv_head
            fused, sizes = (m.qkv, [m.n_head * D, G * D, G * D]) if isinstance(m, Attention) else (m.kv, [G * D] * 2)
            for p in (fused.weight, fused.bias):
                if p is not None and p.requires_grad:
                    blocks[p] = sizes
    return blocks


def _rms(t: torch.Tensor, floor: float) -> float:
    return max(floor, t.float().pow(2).mean().sqrt().item())


class BlockwiseAdafactor(torch.optim.Adafactor):
    """torch.optim.Adafactor, with `blocks` (tensor -> row counts, from stacked_blocks) stepping each
    block relative to its own RMS. Its state and state_dict are Adafactor's own."""

    def __init__(self, params, lr: float, blocks: dict[torch.Tensor, list[int]]):
        super().__init__(params, lr=lr)
        self.blocks = blocks

    @torch.no_grad()
    def step(self, closure=None):
        saved = []
        for group in self.param_groups:
            floor = group["eps"][1]
            for p in group["params"]:
                sizes = self.blocks.get(p)
                if sizes is None or p.grad is None:
                    continue
                whole = _rms(p, floor)
                ratios = [_rms(block, floor) / whole for block in p.split(sizes)]
                saved.append((p, sizes, p.clone(), 1 - group["lr"] * group["weight_decay"], ratios))
        loss = super().step(closure)
        for p, sizes, old, decay, ratios in saved:
            old.mul_(decay)
            p.sub_(old)  # p holds the relative step alone
            for block, ratio in zip(p.split(sizes), ratios):
                block.mul_(ratio)
            p.add_(old)
        return loss
