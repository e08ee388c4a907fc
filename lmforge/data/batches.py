"""Batches for causal language modelling: windows of context + 1 tokens, input = [:-1], target = [1:].
Batches of (source, target) rows for encoder-decoder models: `seq2seq_batch`.

Training draws window starts uniformly at random from a seeded generator whose state is saved with
each checkpoint (the data position), so a resumed run sees exactly the batches it would have seen.
Evaluation walks the validation tokens in order, in non-overlapping windows, so every token is
scored once and the figure is the same every time.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from lmforge.data import IGNORE
from lmforge.errors import LmforgeError


def _windows(tokens: np.ndarray, starts, length: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(tokens[s:s + length], dtype=np.int64) for s in starts]))


class RandomWindows:
    """Endless training batches (x, y) of shape (B, T) from random positions."""

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int, seed: int):
        if len(tokens) < context + 2:
            raise LmforgeError(
                f"the training split has {len(tokens)} tokens, fewer than one window of {context + 1}; "
                "give more text or a shorter model.context_length"
            )
        self.tokens, self.batch_size, self.context = tokens, batch_size, context
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.tokens) - self.context - 1, (self.batch_size,), generator=self.generator)
        w = _windows(self.tokens, starts.tolist(), self.context + 1)
        return w[:, :-1], w[:, 1:]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def eval_windows(tokens: np.ndarray, batch_size: int, context: int,
                 max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows covering the tokens in order (the last, shorter window too),
    or `max_batches` batches of windows spread evenly across them."""
    n = len(tokens) - 1  # number of (input, target) pairs
    if n < 1:
        raise LmforgeError("the validation split has no tokens to score; give more text or a larger data.val_fraction")
    starts = list(range(0, n, context))
    if max_batches is not None and len(starts) > max_batches * batch_size:
        pick = np.linspace(0, len(starts) - 1, max_batches * batch_size).round().astype(int)
        starts = [starts[i] for i in pick]
    full = [s for s in starts if s + context <= n]
    for i in range(0, len(full), batch_size):
        w = _windows(tokens, full[i:i + batch_size], context + 1)
        yield w[:, :-1], w[:, 1:]
    for s in starts[len(full):]:  # the tail, shorter than a window
        w = _windows(tokens, [s], n - s + 1)
        yield w[:, :-1], w[:, 1:]


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Decoder inputs from labels (B, T): [start, y_1, ..., y_{T-1}], IGNORE read as padding (teacher forcing)."""
    tgt = labels.roll(1, dims=1)
    tgt[:, 0] = start_id
    return tgt.masked_fill(tgt == IGNORE, pad_id)


def seq2seq_batch(src: list[list[int]], tgt: list[list[int]], pad_id: int, start_id: int) -> dict:
    """Rows of an encoder-decoder batch: src (B, S) padded on the right with pad_id and src_mask (B, S),
    True at real tokens; with targets, labels (B, T) with IGNORE at padding and tgt_in, the labels
    shifted right behind the decoder's start token."""
    s = max(map(len, src))
    batch = {"src": torch.tensor([r + [pad_id] * (s - len(r)) for r in src], dtype=torch.long),
             "src_mask": torch.tensor([[True] * len(r) + [False] * (s - len(r)) for r in src])}
    if tgt:
        t = max(map(len, tgt))
        labels = torch.tensor([r + [IGNORE] * (t - len(r)) for r in tgt], dtype=torch.long)
        batch.update(labels=labels, tgt_in=shift_right(labels, start_id, pad_id))
    return batch
