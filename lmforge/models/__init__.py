"""Model families built from `lmforge.nn` parts; `build_model(config)` picks one by `config.family`."""

from lmforge.models.gpt import GPT
from lmforge.models.registry import FAMILIES, build_model
from lmforge.models.vocab import grow_vocab

__all__ = ["GPT", "FAMILIES", "build_model", "grow_vocab"]
