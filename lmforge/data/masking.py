"""Masked-LM corruption (BERT, Devlin et al. 2019): choose tokens, then 80% [MASK], 10% random, 10% kept.

Every ordinary token is chosen independently with probability p (mask_prob), so exactly a fraction p
of them is chosen in expectation. Each chosen token then becomes [MASK] with probability 0.8, a
random ordinary token with 0.1, and stays itself with 0.1; the model is scored on every chosen
position (label = the original id) and nowhere else (label = -100, ignored by cross-entropy).

Whole-word masking chooses WORDS instead: each word is chosen with probability p and all its tokens
go together. A token's word being chosen with probability p, a fraction p of the tokens is still
masked in expectation, whatever the word lengths. Each token of a chosen word then draws its own
80/10/10, as Google's whole-word-masking release does (not one draw per word).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lmforge.errors import LmforgeError

from lmforge.data import IGNORE


def _ordinary_ids(vocab_size: int, excluded: torch.Tensor) -> torch.Tensor:
    """The ids a random replacement may take: the vocabulary minus specials (and any exclusions)."""
    ids = torch.arange(vocab_size)
    ids = ids[~torch.isin(ids, excluded)]
    if len(ids) == 0:
        raise LmforgeError(f"the vocabulary of {vocab_size} holds only special tokens, so there is no "
                           "ordinary token to substitute; use a tokenizer with a real vocabulary")
    return ids


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int],
    mask_prob: float = 0.15,
    word_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    random_ids_exclude: Iterable[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt (B, T) int64 `ids` for MLM; return (inputs, labels), both (B, T) int64.

    Special tokens (padding included) are never chosen. With `word_ids` (B, T) int64, equal ids in a
    row are one word, and a token with word id -1 belongs to no word and is never chosen.
    `random_ids_exclude` lists further ids a random replacement must not take. All draws come from
    `generator`, so a seeded generator gives the same corruption every time.
    """
    if not 0.0 <= mask_prob <= 1.0:
        raise LmforgeError(f"mask_prob must be between 0 and 1, got {mask_prob}")
    if ids.dim() != 2:
        raise LmforgeError(f"mask_tokens takes a (batch, time) tensor of ids, got shape {tuple(ids.shape)}")
    device = ids.device
    specials = torch.as_tensor(sorted(set(special_ids)), dtype=torch.long)
    excluded = torch.cat([specials, torch.as_tensor(sorted(set(random_ids_exclude or ())), dtype=torch.long)])
    candidate = ~torch.isin(ids, specials.to(device))  # (B, T) may be chosen
    # Draws happen where the generator lives (the CPU when there is none) and move over afterwards.
    g = dict(generator=generator, device=generator.device if generator is not None else "cpu")
    if word_ids is None:
        chosen = candidate & (torch.rand(ids.shape, **g).to(device) < mask_prob)
    else:
        if word_ids.shape != ids.shape:
            raise LmforgeError(f"word_ids has shape {tuple(word_ids.shape)} but ids has {tuple(ids.shape)}; "
                               "give one word id per token")
        candidate &= word_ids >= 0
        # One uniform per distinct (row, word): key rows apart so equal word ids in two rows stay two words.
        w = word_ids.clamp(min=0)
        key = torch.arange(ids.shape[0], device=device)[:, None] * (int(w.max()) + 1) + w  # (B, T)
        uniq, inverse = torch.unique(key, return_inverse=True)
        word_pick = torch.rand(len(uniq), **g).to(device) < mask_prob  # (n_words,)
        chosen = candidate & word_pick[inverse]
    # 80/10/10, one draw per chosen token.
    r = torch.rand(ids.shape, **g).to(device)
    ordinary = _ordinary_ids(vocab_size, excluded)
    random_tokens = ordinary[torch.randint(len(ordinary), ids.shape, **g)].to(device)  # (B, T)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_tokens, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels
