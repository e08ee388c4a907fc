"""Model families built from `lmforge.nn` parts; `build_model(config)` picks one by `config.family`."""

from lmforge.models.gpt import GPT
from lmforge.models.registry import FAMILIES, build_model

__all__ = ["GPT", "FAMILIES", "build_model"]
