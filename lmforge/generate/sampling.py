"""Choosing the next token from the logits.

    greedy:       x_t = argmax_v logits_v
    temperature:  p = softmax(logits / tau)              tau < 1 sharpens, tau > 1 flattens
    top-k:        keep the k largest logits, renormalise
    top-p:        keep the smallest set of tokens whose probabilities sum to >= p (nucleus), renormalise

A `torch.Generator` seeds the draws, so the same seed gives the same text.
"""

from __future__ import annotations

import torch
from torch import nn


def process_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, V) logits with the filtered-out tokens at -inf, divided by temperature."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already >= p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) -> (B, 1) token ids; temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(process_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def stop_finished_rows(nxt: torch.Tensor, done: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """Rows already finished emit `eos_id` again; rows that just produced it are marked in `done`
    (in place). nxt (B, 1), done (B,) bool."""
    if eos_id is None:
        return nxt
    nxt = torch.where(done.unsqueeze(1), torch.full_like(nxt, eos_id), nxt)
    done |= nxt.squeeze(1) == eos_id
    return nxt


@torch.no_grad()
def generate(model: nn.Module, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             eos_id: int | None = None) -> torch.Tensor:
    """Extend `ids` (B, T) by up to `max_new_tokens`, re-reading the last `context_length` tokens each
    step. Rows stop at `eos_id`; once every row has stopped, generation ends."""
    model.eval()
    device = ids.device
    context = model.config.context_length
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    done = torch.zeros(ids.size(0), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        logits = model(ids[:, -context:])[:, -1, :]  # (B, V)
        nxt = next_token(logits, temperature, top_k, top_p, generator)
        nxt = stop_finished_rows(nxt, done, eos_id)
        ids = torch.cat([ids, nxt], dim=1)
        if eos_id is not None and bool(done.all()):
            break
    return ids
