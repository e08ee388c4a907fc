"""A preallocated key/value cache: decoding reuses the keys and values of every earlier token.

Without a cache, producing token t re-runs the model over all t tokens (O(t^2) work per sequence);
with one, each step runs the model on the new token only and attends to the stored keys/values.

Storage is one tensor per layer for keys and one for values, shaped (B, G, S_max, D), allocated
once. The cache, not a layer, owns the position: layers write at `pos` and read `[:pos + T]`, and the
caller advances `pos` once per forward pass (`advance`), after every layer has written.
"""

from __future__ import annotations

import torch


class Cursor:
    """The cache's position, shared by its layers (a plain object, so that the layers need not point
    back at the cache: that cycle kept every finished generation's cache alive until the garbage
    collector ran, tens of MB per call)."""

    __slots__ = ("pos",)

    def __init__(self) -> None:
        self.pos = 0


class LayerKV:
    def __init__(self, cursor: Cursor, k: torch.Tensor, v: torch.Tensor):
        self.cursor, self.k, self.v = cursor, k, v

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, G, T, D) keys/values at the current position; return all so far."""
        pos, t = self.cursor.pos, k.size(2)
        if pos + t > self.k.size(2):
            raise ValueError(f"the KV cache holds {self.k.size(2)} positions; {pos + t} were asked for")
        self.k[:, :, pos:pos + t] = k
        self.v[:, :, pos:pos + t] = v
        return self.k[:, :, :pos + t], self.v[:, :, :pos + t]


class LayeredCache:
    """What every cache shares: one position for all its layers (`pos`, `advance`), cache[l] a layer."""

    cursor: Cursor
    layers: list

    @property
    def pos(self) -> int:
        return self.cursor.pos

    @pos.setter
    def pos(self, value: int) -> None:
        self.cursor.pos = value

    def __getitem__(self, layer: int):
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def advance(self, t: int) -> None:
        self.pos += t


class KVCache(LayeredCache):
    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (batch, n_kv_head, max_len, head_dim)
        self.cursor = Cursor()
        self.layers = [LayerKV(self.cursor, torch.empty(shape, dtype=dtype, device=device),
                               torch.empty(shape, dtype=dtype, device=device)) for _ in range(n_layer)]

    @classmethod
    def for_model(cls, model, batch: int, max_len: int | None = None) -> "KVCache":
        cfg = model.config
        p = next(model.parameters())
        return cls(cfg.n_layer, batch, cfg.n_kv_head, max_len or cfg.context_length, cfg.head_dim, p.dtype, p.device)

    def select(self, rows: torch.Tensor) -> None:
        """Keep row rows[i] as row i (beam search re-ranks its beams; n samples copy one prefill).
        Rows that keep their own history (rows[i] == i: a beam extending itself) are not copied."""
        if not self.layers:
            return
        if rows.numel() != self.layers[0].k.size(0):  # new batch size: new storage
            for layer in self.layers:
                layer.k, layer.v = layer.k[rows], layer.v[rows]
            return
        moved = (rows != torch.arange(rows.numel(), device=rows.device)).nonzero().squeeze(1)
        if moved.numel() == 0 or self.pos == 0:
            return
        parents = rows[moved]
        for layer in self.layers:  # the right side is read (a copy) before it is written
            layer.k[moved, :, :self.pos] = layer.k[parents, :, :self.pos]
            layer.v[moved, :, :self.pos] = layer.v[parents, :, :self.pos]
