"""Weight initialisation shared by every family (GPT-2 / BERT practice).

Weights and embeddings ~ N(0, std), biases 0, norm gains 1. GPT-2 also scales the projections that
write into the residual stream (attention's and the MLP's output) by 1/sqrt(2L), so the variance
of the residual stream does not grow with depth; BERT does not.
"""

from __future__ import annotations

import math

from torch import nn


def init_weights(model: nn.Module, std: float, residual_layers: int | None = None) -> None:
    """Initialise every parameter of `model` in place; `residual_layers` = L turns on GPT-2's scaling."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif "norm" in name:
            nn.init.ones_(p)
        elif residual_layers and name.endswith("proj.weight"):  # attn.proj and mlp.proj
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * residual_layers))
        else:
            nn.init.normal_(p, 0.0, std)
