"""Model families by name, so the trainer and the CLI never import a specific model file."""

from __future__ import annotations

from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.gpt import GPT

FAMILIES: dict[str, type[nn.Module]] = {"gpt": GPT}


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.family not in FAMILIES:
        raise LmforgeError(f"unknown model family {cfg.family!r}; use one of {', '.join(FAMILIES)}")
    return FAMILIES[cfg.family](cfg)
