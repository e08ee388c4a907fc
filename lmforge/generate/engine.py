"""Decoding with a KV cache: one prefill over the prompt, then one-token steps.

The engine works on token ids only. Every step runs the model on the newest token (B, 1) at
position `cache.pos`, reading the cached keys/values of everything before it, so a step costs the
same at token 10 as at token 1,000. When the cache reaches the model's context, the engine keeps the
last half of the context, prefills it again and goes on (a sliding window that re-encodes only
every context/2 tokens).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from lmforge.generate.kv_cache import KVCache
from lmforge.generate.sampling import next_token, stop_finished_rows


class Engine:
    def __init__(self, model: nn.Module):
        self.model = model

    @torch.no_grad()
    def stream(self, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, eos_id: int | None = None) -> Iterator[torch.Tensor]:
        """Yield the next token of every row, (B,), up to `max_new_tokens` times. Rows that reached
        `eos_id` keep yielding it; the stream ends once all rows have."""
        model = self.model.eval()
        B, T = ids.shape
        context = model.config.context_length
        if T > context:
            raise ValueError(f"the prompt is {T} tokens, longer than the context of {context}")
        generator = torch.Generator(device=ids.device).manual_seed(seed) if seed is not None else None
        cache = KVCache.for_model(model, B)
        history = ids
        done = torch.zeros(B, dtype=torch.bool, device=ids.device)
        logits = self._prefill(ids, cache)
        for i in range(max_new_tokens):
            if i > 0:
                if cache.pos == context:  # full: re-encode the last half of the context
                    cache.pos = 0
                    logits = self._prefill(history[:, -(context // 2):], cache)
                else:
                    logits = model(history[:, -1:], start_pos=cache.pos, cache=cache)[:, -1]
                    cache.advance(1)
            nxt = next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
            nxt = stop_finished_rows(nxt, done, eos_id)
            history = torch.cat([history, nxt], dim=1)
            yield nxt.squeeze(1)
            if eos_id is not None and bool(done.all()):
                return

    def _prefill(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        logits = self.model(ids, start_pos=cache.pos, cache=cache)[:, -1]  # (B, V)
        cache.advance(ids.size(1))
        return logits

    def generate(self, ids: torch.Tensor, max_new_tokens: int, **sampling) -> torch.Tensor:
        """`ids` (B, T) extended by the generated tokens, (B, T + n)."""
        new = list(self.stream(ids, max_new_tokens, **sampling))
        return torch.cat([ids, torch.stack(new, dim=1)], dim=1) if new else ids
