"""A key/value cache for beam search whose rows share their histories (shared_history.c reads it).

Beam search re-ranks its beams at every step: beam i goes on from beam rows[i]'s tokens, so its
keys and values so far are beam rows[i]'s. A cache of one history per row (kv_cache.KVCache) copies
them: every moved beam, every layer, every position so far, at every step, which on a CPU costs
about as much as the step's attention itself. This cache never copies a key. Each position's keys and
values stay in the stored row that computed them, and a table says where each row's history lies:

    owner[n, s] = the stored row holding row n's key and value at position s

A re-ranking rewrites the table's first `pos` columns (owner[i, :pos] = owner[rows[i], :pos]); the
step's new key of row n is written to stored row n at position pos, where nobody's history reads yet
(owner[n, s] = n for s >= pos, always). Attention follows the table in one compiled call per layer
(`attend`); `update` gathers the histories in PyTorch for anything else (several new tokens at once,
a mask, the attention weights). Keys are kept in float32 whatever the model computes in.
"""

from __future__ import annotations

import torch

from lmforge.generate.cpu.tuner import _threads
from lmforge.generate.kv_cache import Cursor, LayeredCache


class SharedLayer:
    def __init__(self, cache: "SharedHistoryCache", layer: int):
        self.cache, self.layer = cache, layer

    def _write(self, k: torch.Tensor, v: torch.Tensor) -> int:
        """Store the new (N, G, T, D) keys/values of rows 0..N-1 at the current position; -> keys now."""
        c, pos, t = self.cache, self.cache.pos, k.size(2)
        store_k, store_v = c.k[self.layer], c.v[self.layer]
        if pos + t > store_k.size(2):
            raise ValueError(f"the KV cache holds {store_k.size(2)} positions; {pos + t} were asked for")
        store_k[:k.size(0), :, pos:pos + t] = k
        store_v[:v.size(0), :, pos:pos + t] = v
        return pos + t

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values; return every row's history gathered, (N, G, S, D) each."""
        keys = self._write(k, v)
        owner = self.cache.owner[:k.size(0), :keys]  # (N, S)
        where = torch.arange(keys)
        history = [s[self.layer][owner, :, where].permute(0, 2, 1, 3).to(k.dtype) for s in (self.cache.k, self.cache.v)]
        return history[0], history[1]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
               scale: float | None) -> torch.Tensor:
        """One new query per row, (N, H, 1, D), over each row's history with the new key: the
        compiled call. bias: T5's relative positions, broadcastable to (1, H, 1, S)."""
        keys = self._write(k, v)
        c = self.cache
        return compiled_attention(c.lib, q, c.k[self.layer], c.v[self.layer], keys, c.owner, c.slots, None, bias, scale)


def compiled_attention(lib, q: torch.Tensor, k_store: torch.Tensor, v_store: torch.Tensor, keys: int,
                       owner: torch.Tensor, owner_stride: int, lengths: torch.Tensor | None,
                       bias: torch.Tensor | None, scale: float | None) -> torch.Tensor:
    """q (N, H, 1, D) over float32 stores (R, G, slots, D) as shared_history.c states -> (N, H, 1, D)."""
    N, H, _, D = q.shape
    qf = q.float().contiguous()
    b = None if bias is None else bias.float().expand(1, H, 1, keys).contiguous()
    y = torch.empty_like(qf)
    rc = lib.lmf_shared_history_attention(
        N, H, k_store.size(1), D, keys, k_store.size(2), qf.data_ptr(), k_store.data_ptr(), v_store.data_ptr(),
        owner.data_ptr(), owner_stride, None if lengths is None else lengths.data_ptr(),
        None if b is None else b.data_ptr(), D ** -0.5 if scale is None else scale, y.data_ptr(), _threads())
    if rc != 0:
        raise ValueError(f"the compiled attention refused {H} query heads over {k_store.size(1)} key heads "
                         f"and {keys} keys")
    return y.to(q.dtype)


class SharedSources:
    """Every decoder layer's cross-attention keys and values, one row per source (float32), and the
    source each decoder row reads (`point`): a source's beams or samples read its one copy, in any
    order, so re-ranking them moves nothing. lengths (sources,): each source's real tokens (sources
    are padded on the right). Layer l is `self[l]`, whose `attend` the cross-attention calls."""

    def __init__(self, lib, kv: list[tuple[torch.Tensor, torch.Tensor]], lengths: torch.Tensor):
        self.lib, self.lengths = lib, lengths.long()
        self.kv = [(k.float().contiguous(), v.float().contiguous()) for k, v in kv]
        self.point(torch.arange(lengths.numel()))

    def point(self, owner: torch.Tensor) -> None:
        """Row n reads source owner[n]."""
        self.owner = owner.long().contiguous()
        self.row_lengths = self.lengths[self.owner].contiguous()

    def __getitem__(self, layer: int) -> "SourceLayer":
        return SourceLayer(self, layer)


class SourceLayer:
    def __init__(self, sources: SharedSources, layer: int):
        self.sources, self.layer = sources, layer

    def attend(self, q: torch.Tensor, scale: float | None) -> torch.Tensor:
        """Queries (N, H, T, D) of the decoder rows over their sources' keys -> (N, H, T, D)."""
        N, H, T, D = q.shape
        s = self.sources
        k, v = s.kv[self.layer]
        owner, lengths = s.owner, s.row_lengths
        if T > 1:  # each query its own row of the call
            q = q.transpose(1, 2).reshape(N * T, H, 1, D)
            owner, lengths = owner.repeat_interleave(T), lengths.repeat_interleave(T)
        y = compiled_attention(s.lib, q, k, v, k.size(2), owner, 0, lengths, None, scale)
        return y if T == 1 else y.view(N, T, H, D).transpose(1, 2)


class SharedHistoryCache(LayeredCache):
    """The KV cache of `rows` rows for `n_layer` layers, `slots` positions each; `lib` is the compiled
    library (cpu.step.library()). Same surface as KVCache (pos, advance, select, [layer]), and each
    layer can also `attend`."""

    def __init__(self, lib, n_layer: int, rows: int, n_kv_head: int, slots: int, head_dim: int):
        self.lib, self.slots = lib, slots
        self.cursor = Cursor()
        self.k, self.v = ([torch.empty(rows, n_kv_head, slots, head_dim) for _ in range(n_layer)] for _ in range(2))
        self.owner = torch.arange(rows).unsqueeze(1).repeat(1, slots)  # (rows, slots) int64
        self.layers = [SharedLayer(self, i) for i in range(n_layer)]

    def select(self, rows: torch.Tensor) -> None:
        """Row rows[i] becomes row i: only the table changes. More rows than stored (one source's
        encoding serving its beams) grow the store once; its rows keep their places."""
        history = self.owner[rows, :self.pos]
        n, stored = rows.numel(), self.owner.size(0)
        if n > stored:
            self.k = [self._grown(t, n) for t in self.k]
            self.v = [self._grown(t, n) for t in self.v]
            self.owner = torch.arange(n).unsqueeze(1).repeat(1, self.slots)
        self.owner[:n, :self.pos] = history

    def _grown(self, store: torch.Tensor, n: int) -> torch.Tensor:
        grown = torch.empty(n, *store.shape[1:])
        grown[:store.size(0), :, :self.pos] = store[:, :, :self.pos]
        return grown
