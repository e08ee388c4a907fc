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

    # --- continuous batching (generate/scheduler.py): rows joining and leaving between steps ---------
    def join(self, other: "DecodeState", reserve: int) -> None:
        """The rows of `other` (prefilled on their own) join these. Both are aligned on their newest
        column, the shorter ones padded on the left (a token's position is its slot less its row's
        padding, so no row's positions change), in a cache with room for `reserve` more tokens."""
        pos = max(self.cache.pos, other.cache.pos)
        slots = min(self.context, pos + reserve)
        mine, theirs = self._realigned(pos, slots), other._realigned(pos, slots)
        self.history = torch.cat([mine[0], theirs[0]])
        self.keys, self.npad = torch.cat([mine[1], theirs[1]]), torch.cat([mine[2], theirs[2]])
        self.logits = torch.cat([self.logits, other.logits])
        self._store(pos, [torch.cat([a, b]) for a, b in zip(mine[3], theirs[3])])

    def compact(self, reserve: int) -> None:
        """After rows left: drop the padding every row has on its left, and fit the cache to the rows."""
        drop = int(self.npad.min()) if self.npad.numel() else 0
        pos = self.cache.pos - drop
        history, self.keys, self.npad, kv = self._realigned(pos, min(self.context, pos + reserve))
        self.history = history
        self._store(pos, kv)

    def _realigned(self, pos: int, slots: int):
        """(history, keys, npad, [k, v per layer]) with the newest column at `pos` in `slots` slots."""
        shift, old = pos - self.cache.pos, self.cache.pos
        src, dst = max(0, -shift), max(0, shift)  # copy slots src..old to dst..pos
        history = torch.cat([torch.full((self.history.size(0), max(0, shift)), PAD, dtype=torch.long,
                                        device=self.device), self.history[:, src:]], dim=1)
        keys = torch.ones(self.keys.size(0), slots, dtype=torch.bool, device=self.device)
        keys[:, :pos] = False
        keys[:, dst:pos] = self.keys[:, src:old]
        kv = []
        for layer in self.cache.layers:
            for t in (layer.k, layer.v):
                new = t.new_zeros(t.size(0), t.size(1), slots, t.size(3))
                new[:, :, dst:pos] = t[:, :, src:old]
                kv.append(new)
        return history, keys, (self.npad + shift).to(torch.int32), kv

    def _store(self, pos: int, kv: list[torch.Tensor]) -> None:
        for i, layer in enumerate(self.cache.layers):
            layer.k, layer.v = kv[2 * i], kv[2 * i + 1]
        self.cache.pos = pos
        self.padded = not bool(self.keys[:, :pos].all())
