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


ROWS = 64  # inputs per batch at most: a step's fixed costs shared by 64 x beams rows (t5-mini, beam 4,
# bible en-es: 1.8x the speed of batches of 16)
SLOTS = 1 << 15  # decoder rows x output positions per batch at most: the cache and the step stay bounded


def length_batches(rows: list[list[int]], settings: Callable[[list[list[int]]], GenerateConfig],
                   batch_size: int = ROWS, slots: int = SLOTS) -> list[list[int]]:
    """Row indices in batches of similar length, longest first: up to `batch_size` rows, fewer when
    their decoder rows (beams or samples per input) times output positions would pass `slots`."""
    order = [one[0] for one in by_length([len(r) for r in rows], 1)]  # longest first
    batches, i = [], 0
    while i < len(order):
        gen = settings([rows[order[i]]])  # the longest row left sets the batch's output cap
        per_row = max(gen.num_beams, gen.num_samples) * (gen.max_new_tokens + 1)
        k = max(1, min(batch_size, slots // per_row))
        batches.append(order[i:i + k])
        i += k
    return batches


def decode_rows(model: nn.Module, rows: list[list[int]], settings: Callable[[list[list[int]]], GenerateConfig],
                batch_size: int = ROWS) -> list[list[int]]:
    """The new tokens of each row (a prompt, or an encoder-decoder's source), in row order."""
    engine = Engine(model, backend="torch")  # batches of many rows: the one-row native step does not apply
    out: list[list[int] | None] = [None] * len(rows)
    for idx in length_batches(rows, settings, batch_size):
        chunk = [rows[i] for i in idx]
        for i, ids in zip(idx, engine.generate(chunk, settings(chunk))):
            out[i] = ids
    return out
