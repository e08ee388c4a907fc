"""Decoding an encoder-decoder model: the source is encoded once, the target grows a token a step.

    memory = Encoder(source)                                   once per source
    K_x, V_x = memory W^K_l, memory W^V_l  for each decoder layer l       once too: the cross-attention cache
    y_0 = decoder start;  y_t ~ p(. | y_<t, memory)             one decoder step per token, with a KV cache

Sources of different lengths share a batch by right padding hidden by a key mask (the encoder is
bidirectional, so real tokens keep positions 0..S-1 either way). `Seq2SeqState` keeps the same
surface as `DecodeState` (logits, history, step, select), so sampling, streaming and beam search
run both model kinds with one loop; `start_state` picks the state a model needs.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.generate.batch import DecodeState, as_rows
from lmforge.generate.cpu.shared_history import SharedHistoryCache, SharedSources
from lmforge.generate.kv_cache import KVCache
from lmforge.runtime import compute_dtype


def is_seq2seq(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "family", None) == "seq2seq"


def max_target(model: nn.Module) -> int:
    """The most new tokens the decoder can produce after its start token (its positions end there)."""
    return model.config.context_length - 1


def start_state(model: nn.Module, rows: list[list[int]], native=None, reserve: int | None = None):
    """The decoding state for `model`: sources to translate (seq2seq) or prompts to continue."""
    if is_seq2seq(model):
        return Seq2SeqState(model, rows, reserve, native)
    return DecodeState(model, rows, native, reserve)


def pad_sources(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source rows -> ids (B, S) padded on the right with 0, and the mask (B, S), True at real tokens."""
    s = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (s - len(r)) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[True] * len(r) + [False] * (s - len(r)) for r in rows], device=device)
    return ids, mask


class Seq2SeqState:
    """The rows being decoded: each source's encoder output as cross-attention keys/values, the
    decoder's history (N, L) starting with `config.decoder_start_id`, its self-attention cache, and
    the logits of each row's next token. `reserve`: new tokens to make room for (at most the
    decoder's context less the start token). native: the compiled library, when the engine decodes
    natively: the self-attention cache is then one whose rows share their histories (beams re-ranked
    copy no keys; generate/cpu/shared_history.py)."""

    def __init__(self, model: nn.Module, rows: list[list[int]], reserve: int | None = None, native=None):
        cfg = model.config
        self.model = model
        self.device = next(model.parameters()).device
        src, mask = pad_sources(as_rows(rows, cfg.context_length), self.device)
        self.src_mask = None if bool(mask.all()) else mask  # decided once: no padding, no mask at any step
        self.cross = model.cross_kv(model.encode(src, self.src_mask))
        self.source_kv, self.source_mask = self.cross, self.src_mask  # one row per source, kept
        slots = self.slots = 1 + min(max_target(model), max_target(model) if reserve is None else reserve)
        p = next(model.parameters())
        self.shared = native is not None
        if self.shared:  # rows point at their source's keys and their history's: re-ranking copies nothing
            self.cross, self.src_mask = SharedSources(native, self.cross, mask.sum(1)), None
            self.cache = SharedHistoryCache(native, cfg.n_decoder_layer, len(rows), cfg.n_kv_head, slots, cfg.head_dim)
        else:
            self.cache = KVCache(cfg.n_decoder_layer, len(rows), cfg.n_kv_head, slots, cfg.head_dim,
                                 compute_dtype(p), p.device)  # autocast's: no conversion at each read
        self.history = torch.full((len(rows), 1), cfg.decoder_start_id, dtype=torch.long, device=self.device)
        self.owner = torch.arange(len(rows), device=self.device)  # the source each row translates
        self.logits = self._run(self.history)

    def _run(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.model.decode(ids, None, self.src_mask, start_pos=self.cache.pos, cache=self.cache,
                                   cross_kv=self.cross)[:, -1]  # (N, V)
        self.cache.advance(ids.size(1))
        return logits

    def step(self, tokens: torch.Tensor) -> None:
        """Append `tokens` (N,) to every row and compute the logits that follow them."""
        self.history = torch.cat([self.history, tokens.unsqueeze(1)], dim=1)
        if self.cache.pos == self.slots:
            raise ValueError(f"the decoder's context of {self.model.config.context_length} tokens is full")
        self.logits = self._run(tokens.unsqueeze(1))

    def _share_sources(self, owner: torch.Tensor) -> None:
        """Rows now read sources `owner`: n rows per source, sources in order (all of them, or the
        ones whose search goes on), share each source's keys and values (CrossAttention folds them);
        any other order gets a copy per row."""
        sources, counts = torch.unique_consecutive(owner, return_counts=True)
        in_order = bool((counts == counts[0]).all()) and bool((sources[1:] > sources[:-1]).all())
        if in_order and len(sources) == len(self.source_kv[0][0]):
            self.cross, self.src_mask = self.source_kv, self.source_mask
        else:
            keep = sources if in_order else owner
            self.cross = [(k[keep], v[keep]) for k, v in self.source_kv]
            self.src_mask = None if self.source_mask is None else self.source_mask[keep]

    def select(self, rows: torch.Tensor) -> None:
        """Row rows[i] becomes row i: beam search's re-ranking, n samples sharing one encoding."""
        self.history, self.logits = self.history[rows], self.logits[rows]
        owner = self.owner[rows]
        if self.shared:
            self.cross.point(owner)
        elif not torch.equal(owner, self.owner):  # beams re-ranked within their source: nothing to change
            self._share_sources(owner)
        self.owner = owner
        self.cache.select(rows)
