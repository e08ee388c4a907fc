"""Model families by name, so the trainer and the CLI never import a specific model file.

`build_model(config)` builds the family's model and, when `config.head` names a task, puts that head
over it (models/heads.py): one checkpoint format for pretrained and fine-tuned models alike. A
quantised config (`config.quantization`) puts integer layers where it says (models/quantized.py).
"""

from __future__ import annotations

from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.bert import Bert
from lmforge.models.electra import Electra
from lmforge.models.gpt import GPT
from lmforge.models.seq2seq import Seq2Seq

FAMILIES: dict[str, type[nn.Module]] = {"gpt": GPT, "bert": Bert, "electra": Electra, "seq2seq": Seq2Seq}


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.family not in FAMILIES:
        raise LmforgeError(f"unknown model family {cfg.family!r}; use one of {', '.join(FAMILIES)}")
    if cfg.head != "none":
        from lmforge.models.heads import build_head

        model = build_head(cfg)
    else:
        model = FAMILIES[cfg.family](cfg)
    if cfg.quantization:
        from lmforge.models.quantized import apply_layout

        apply_layout(model, cfg.quantization)
    return model
