"""The rows being decoded together: left-padded histories, their KV cache, the key mask.

Prompts of different lengths share a batch by left padding:
    prompt "a b c"   ->  a b c | x y ...
    prompt "d"       ->  _ _ d | x y ...     (_ = padding, masked out as a key; d sits at position 0)
so every row's newest token is in the same column and one (N, 1) step serves them all.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lmforge.generate.kv_cache import KVCache

PAD = -1  # a padding slot in a history; never a token id


def as_rows(prompts: torch.Tensor | Sequence[Sequence[int]], context: int) -> list[list[int]]:
    """A (B, T) tensor or a list of token-id lists -> a list of non-empty lists within the context."""
    rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else [list(map(int, p)) for p in prompts]
    if not rows:
        raise ValueError("no prompts were given")
    for row in rows:
        if not row:
            raise ValueError("a prompt is empty; start it with at least one token (e.g. end-of-text)")
        if len(row) > context:
            raise ValueError(f"the prompt is {len(row)} tokens, longer than the context of {context}")
    return rows


def pad_left(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    """Rows of different lengths -> (B, T_max) with PAD before the shorter ones."""
    t = max(len(r) for r in rows)
    return torch.tensor([[PAD] * (t - len(r)) + r for r in rows], dtype=torch.long, device=device)


class DecodeState:
    """The rows being decoded: their histories (N, L) with PAD at the left, their KV cache, the key
    mask over the cache, and the logits for each row's next token. `native`: a NativeDecoder
    (generate/cpu/) that runs the one-token steps; the prompts' prefill stays with the model.
    `reserve`: the new tokens to make room for; the cache then holds the longest prompt and them, at
    most the context (None: the whole context)."""

    def __init__(self, model: nn.Module, rows: list[list[int]], native=None, reserve: int | None = None):
        self.model = model
        self.native = native
        self.context = model.config.context_length
        self.reserve = reserve
        self.device = next(model.parameters()).device
        self.history = pad_left(rows, self.device)
        self._prefill(rows)

    def _prefill(self, rows: list[list[int]]) -> None:
        ids = pad_left(rows, self.device)
        B, T = ids.shape
        slots = self.context if self.reserve is None else max(1, min(self.context, T + self.reserve))
        self.cache = KVCache.for_model(self.model, B, max_len=slots)
        self.keys = torch.ones(B, slots, dtype=torch.bool, device=self.device)  # False at padding
        self.keys[:, :T] = ids != PAD
        self.padded = not bool(self.keys[:, :T].all())  # no padding: the model's plain causal path
        self.npad = (ids == PAD).sum(1, dtype=torch.int32)  # (B,) padding slots before each row's prompt
        self.logits = self._run(ids.clamp(min=0))

    def _run(self, ids: torch.Tensor) -> torch.Tensor:
        pos, t = self.cache.pos, ids.size(1)
        if t == 1 and self.native is not None:
            logits = self.native(ids[:, 0], pos, self.npad, self.cache)
            self.cache.advance(1)
            return logits
        mask = self.keys[:, :pos + t] if self.padded else None
        head = getattr(self.model, "lm_head", None)
        if t > 1 and isinstance(head, nn.Linear) and not self.model._forward_hooks:  # a prefill: the head on
            h = self.model(ids, start_pos=pos, cache=self.cache, attention_mask=mask, features_only=True)
            logits = head(h[:, -1])  # the last position only, never (N, T, V) logits for a long prompt
        else:
            logits = self.model(ids, start_pos=pos, cache=self.cache, attention_mask=mask)[:, -1]  # (N, V)
        self.cache.advance(t)
        return logits

    def step(self, tokens: torch.Tensor) -> None:
        """Append `tokens` (N,) to every row and compute the logits that follow them."""
        self.history = torch.cat([self.history, tokens.unsqueeze(1)], dim=1)
        if self.cache.pos == self.keys.size(1):  # full: re-encode each row's last `context` tokens
            self.reserve = None  # past the context: every later step needs the whole window
            self._prefill(self._windows())
        else:
            self.logits = self._run(tokens.unsqueeze(1))

    def _windows(self) -> list[list[int]]:
        """Each row's tokens to re-encode when the cache is full, the newest included: its last
        `context` tokens, the window the model reads when it re-reads the text at every step (so
        cached decoding past the context gives the tokens uncached decoding gives). A row with
        padding has fewer of its own: it keeps every one, and sees what it would see alone."""
        return [row[row != PAD][-self.context:].tolist() for row in self.history]

    def select(self, rows: torch.Tensor) -> None:
        """Row rows[i] becomes row i: for beam search's re-ranking and for sharing one prefill."""
        self.history, self.keys, self.logits = self.history[rows], self.keys[rows], self.logits[rows]
        self.npad = self.npad[rows]
        self.cache.select(rows)
