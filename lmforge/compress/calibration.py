"""Calibration: a little text like the model's own, and what each layer sees when the model reads it.

Quantisation's clipping and Wanda's pruning scores both weigh a layer's weights by how strongly each
input channel is driven. For input channel k of a layer that sees the rows x over the calibration
text, that is its mean energy

    E[x_k^2] = (1 / N) sum_n x_{n,k}^2        (N rows: every position of every calibration sequence)

whose square root is, up to the constant sqrt(N), the channel's norm ||X_k||_2 that Wanda uses.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LmforgeError

CALIBRATION_TOKENS = 16_384


def calibration_batches(path: str | None, tokenizer, context: int, run: str | Path | None = None,
                        limit: int = CALIBRATION_TOKENS) -> list[torch.Tensor]:
    """The calibration text as rows of at most `context` tokens (`limit` tokens in all): the file at
    `path` (any corpus lmforge reads), or without one the start of the training split of `run`."""
    if path is None:
        ids = _training_tokens(run, tokenizer, limit)
    else:
        from lmforge.data.corpora import load_corpus

        ids = []
        for d in load_corpus(path).documents:
            ids += tokenizer.encode(d)
            if len(ids) >= limit:
                break
    if len(ids) < 2:
        raise LmforgeError(f"the calibration text {path or run} holds fewer than two tokens; give a few paragraphs of "
                           "text like the model's own")
    ids = ids[:limit]
    rows = [torch.tensor(ids[i:i + context], dtype=torch.long) for i in range(0, len(ids), context)]
    return [r[None] for r in rows if len(r) > 1]


def _training_tokens(run: str | Path | None, tokenizer, limit: int) -> list[int]:
    """The first `limit` tokens of the run's own training split (its recipe.yaml names the corpus)."""
    from lmforge.config import load_recipe
    from lmforge.data.shards import prepare

    recipe = Path(run) / "recipe.yaml" if run is not None else None
    if recipe is None or not recipe.is_file():
        raise LmforgeError(f"{run} has no recipe.yaml naming its training text; give text like the model's own with "
                           "--calibration FILE")
    data = prepare(load_recipe(str(recipe)).data, tokenizer=tokenizer, log=lambda *a: None)
    return [int(t) for t in data.train[:limit]]


def input_energy(model: nn.Module, names: list[str], batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """E[x_k^2] per input channel of each named layer, over the calibration batches."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(_module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for ids in batches:
                model(ids)
    finally:
        for h in handles:
            h.remove()
    return {n: sums[n] / counts[n] for n in sums}
