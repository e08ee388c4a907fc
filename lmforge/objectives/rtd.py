"""Replaced-token detection: ELECTRA's pretraining (Clark et al. 2020; the model is models/electra.py).

    L = L_MLM(G) + lambda * L_RTD(D)
    L_RTD = -(1/N) sum_{t real} [r_t log sigmoid(d_t) + (1 - r_t) log(1 - sigmoid(d_t))]

where G is trained by masked LM on the masked input, its samples fill the masked positions, r_t = 1
where the token now differs from the original, d_t is the discriminator's logit, and N counts the
real (non-padding) tokens. Sampling is not differentiable, so the discriminator's loss does not
reach the generator (the paper trains them jointly this way, not adversarially).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data import IGNORE
from lmforge.objectives.mlm import masked_lm_loss


def rtd_loss(model: nn.Module, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """`model` is an `Electra`; batch holds the masked `input_ids`, MLM `labels` and the attention mask."""
    ids, labels, am = batch["input_ids"], batch["labels"], batch.get("attention_mask")
    tt = batch.get("token_type_ids")
    h_g = model.generator(ids, tt, am)  # (B, T, C_g)
    mlm, stats = masked_lm_loss(model.generator, h_g, labels)
    chosen = labels != IGNORE
    with torch.no_grad():  # sample x_hat ~ p_G at the chosen positions
        probs = torch.softmax(model.generator.mlm_logits(h_g[chosen]).float(), dim=-1)  # (M, V)
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1) if probs.numel() else \
            labels[chosen]
        corrupt = ids.clone()
        corrupt[chosen] = sampled
        original = torch.where(chosen, labels, ids)
        replaced = (corrupt != original).float()  # a sample equal to the original is "original"
    real = torch.ones_like(ids, dtype=torch.bool) if am is None else am.bool()
    d = model.replaced_logits(model.discriminator(corrupt, tt, am)).float()  # (B, T)
    rtd = F.binary_cross_entropy_with_logits(d[real], replaced[real])
    loss = mlm + model.config.rtd_weight * rtd
    with torch.no_grad():
        guess = d[real] > 0
        truth = replaced[real].bool()
    stats.update(rtd_loss=rtd.detach(), rtd_correct=(guess == truth).sum(), rtd_count=torch.tensor(truth.numel()),
                 replaced_found=(guess & truth).sum(), replaced_count=truth.sum())
    return loss, stats
