"""The outputs a model writes for many inputs, batched by length: what generation metrics score.

Rows of similar length share a batch (less padding, and a batch ends when its longest output does);
the outputs come back in row order. `settings(rows)` gives each batch its decoding settings (a
translation's length cap follows its sources).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from lmforge.config import GenerateConfig
from lmforge.data.labelled import by_length
from lmforge.generate import Engine


def decode_rows(model: nn.Module, rows: list[list[int]], settings: Callable[[list[list[int]]], GenerateConfig],
                batch_size: int = 16) -> list[list[int]]:
    """The new tokens of each row (a prompt, or an encoder-decoder's source), in row order."""
    engine = Engine(model, backend="torch")  # batches of many rows: the one-row native step does not apply
    batches = by_length([len(r) for r in rows], batch_size)
    out: list[list[int] | None] = [None] * len(rows)
    for idx in batches:
        chunk = [rows[i] for i in idx]
        for i, ids in zip(idx, engine.generate(chunk, settings(chunk))):
            out[i] = ids
    return out
