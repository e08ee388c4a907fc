"""Denoising objectives for encoder-decoder pretraining: T5's span corruption and BART's infilling.

T5 (Raffel et al. 2020) removes spans of tokens from the input, each replaced by its own sentinel,
and the target lists each sentinel followed by the tokens it replaced:
    original  Thank you for inviting me to your party last week .
    input     Thank you <extra_id_0> me to your party <extra_id_1> week .
    target    <extra_id_0> for inviting <extra_id_1> last <extra_id_2>
so the target is short and the model spells out only what is missing. BART (Lewis et al. 2020)
instead writes the whole original text back, from an input whose spans became one mask token each
and whose sentences may be shuffled.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lmforge.errors import LmforgeError


def _check_share(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise LmforgeError("{setting} cannot be used; give a share of the tokens between 0 and 1", name, value)


def _segment(n_items: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of `n_segments` non-empty runs that together hold `n_items`, uniformly at random among
    all such splits: a random choice of n_segments - 1 of the n_items - 1 places between items."""
    cuts = np.sort(rng.choice(n_items - 1, size=n_segments - 1, replace=False)) + 1
    return np.diff(np.concatenate(([0], cuts, [n_items])))


def noise_mask(length: int, rng: np.random.Generator, noise_density: float = 0.15,
               mean_span: float = 3.0) -> np.ndarray:
    """Which of `length` tokens are noise (True), as T5's random_spans_noise_mask chooses them.

        noise tokens  N = round(length * noise_density), clipped to [1, length - 1]
        noise spans   S = round(N / mean_span), clipped to [1, min(N, length - N)]
        the N noise tokens are cut into S non-empty spans, and the length - N kept tokens into S
        non-empty runs, each at random (`_segment`); the sequence is then kept run 1, noise span 1,
        kept run 2, noise span 2, ... so it starts with kept tokens and ends with noise, as in T5's
        default (its later `random_roll` option, which rotates the mask, is not taken here).

    The clipping keeps at least one noise span and one kept token whenever length >= 2 (a length
    below 2 gets no noise); the upper bound on S (T5 has none) lets every span and run be non-empty
    even at high noise densities.
    """
    _check_share("noise_density", noise_density)
    if not mean_span >= 1:
        raise LmforgeError("{setting} cannot be used; give the mean span length in tokens, 1 or more (T5: 3)",
                           "mean_span", mean_span)
    if length < 2:
        return np.zeros(length, dtype=bool)
    n_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    n_spans = min(max(int(round(n_noise / mean_span)), 1), n_noise, length - n_noise)
    noise_lengths = _segment(n_noise, n_spans, rng)
    kept_lengths = _segment(length - n_noise, n_spans, rng)
    runs = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # kept, noise, kept, noise, ...
    return np.repeat(np.tile([False, True], n_spans), runs)


def span_corrupt(ids: list[int], sentinel_ids: list[int], rng: np.random.Generator, noise_density: float = 0.15,
                 mean_span: float = 3.0, eos_id: int | None = None) -> tuple[list[int], list[int]]:
    """T5's (input_ids, target_ids) for one row: each noise span (`noise_mask`) becomes the next
    sentinel in the input; the target is each sentinel followed by the tokens it replaced, then one
    more sentinel that closes the last span; `eos_id` (when given) ends both, as T5 does.
    `sentinel_ids`: the tokenizer's <extra_id_0>, <extra_id_1>, ... (Tokenizer.sentinel_ids)."""
    if not sentinel_ids:
        raise LmforgeError("the tokenizer has no sentinel tokens (<extra_id_0>, <extra_id_1>, ...), which span "
                           "corruption needs; train the tokenizer with sentinels (e.g. sentinels=100) or use a "
                           "T5 tokenizer.json")
    mask = noise_mask(len(ids), rng, noise_density, mean_span)
    starts = np.flatnonzero(mask & ~np.concatenate(([False], mask[:-1])))
    if len(starts) + 1 > len(sentinel_ids):
        raise LmforgeError(f"a row of {len(ids)} tokens gets {len(starts)} spans, which need {len(starts) + 1} "
                           f"sentinel tokens, but the tokenizer has {len(sentinel_ids)}; use shorter rows or a "
                           "tokenizer with more sentinels")
    if not set(sentinel_ids).isdisjoint(ids):
        raise LmforgeError("a row already holds a sentinel token such as <extra_id_0>, so its spans could not be told "
                           "apart; remove sentinel tokens from the text")
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for i, token in enumerate(ids):
        if not mask[i]:
            inputs.append(token)
        else:
            if i == 0 or not mask[i - 1]:  # a span starts: one sentinel in both
                span += 1
                inputs.append(sentinel_ids[span])
                targets.append(sentinel_ids[span])
            targets.append(token)
    targets.append(sentinel_ids[span + 1])
    if eos_id is not None:
        inputs.append(eos_id)
        targets.append(eos_id)
    return inputs, targets


# ---------------------------------------------------------------------------- BART


SENTENCE_ENDS = ".!?\u3002\uff01\uff1f"  # . ! ? and their full-width forms


def sentence_end_ids(tokenizer) -> list[int]:
    """The ids of the tokens that end a sentence: those whose text, spaces stripped, ends in . ! ? (or
    a full-width form), for `permute_sentences`."""
    specials, ids = tokenizer.special_ids, []
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode([i]).rstrip()
        if text and text[-1] in SENTENCE_ENDS and i not in specials:
            ids.append(i)
    return ids


def permute_sentences(ids: list[int], sentence_ends: Iterable[int], rng: np.random.Generator) -> list[int]:
    """The sentences of `ids` (each ends after a token in `sentence_ends`, the last at the end of the
    row) in a random order."""
    ends = set(sentence_ends)
    sentences: list[list[int]] = [[]]
    for token in ids:
        sentences[-1].append(token)
        if token in ends:
            sentences.append([])
    sentences = [s for s in sentences if s]
    return [t for k in rng.permutation(len(sentences)) for t in sentences[k]]


def infill(ids: list[int], mask_id: int, rng: np.random.Generator, mask_ratio: float = 0.3,
           poisson_lambda: float = 3.0) -> list[int]:
    """BART's text infilling: spans whose lengths are drawn from Poisson(poisson_lambda) each become
    ONE mask token, until exactly M = round(len(ids) * mask_ratio) tokens are masked.

    Lengths are drawn until they sum to M (the last one cut to fit); a length of 0 inserts a mask
    and removes nothing, so the model also learns how many tokens a mask hides, none included. The
    spans go, in their drawn order, into distinct random gaps among the len(ids) - M kept tokens
    (the gap before each kept token, and the one at the end), or into any gaps when there are more
    spans than gaps; the kept tokens keep their order. Unlike fairseq, whose spans start at random
    places and may overlap, exactly M tokens are masked.
    """
    _check_share("mask_ratio", mask_ratio)
    if not poisson_lambda > 0:  # at 0 every span would be empty and the budget never met
        raise LmforgeError("{setting} cannot be used; give the mean span length, above 0 (BART: 3)",
                           "poisson_lambda", poisson_lambda)
    n = len(ids)
    budget = int(round(n * mask_ratio))
    lengths: list[int] = []
    total = 0
    while total < budget:
        lengths.append(min(int(rng.poisson(poisson_lambda)), budget - total))
        total += lengths[-1]
    n_kept, n_gaps = n - budget, n - budget + 1
    gaps = rng.choice(n_gaps, size=len(lengths), replace=len(lengths) > n_gaps)
    spans_at: dict[int, list[int]] = {}
    for gap, length in zip(gaps.tolist(), lengths):
        spans_at.setdefault(gap, []).append(length)
    out: list[int] = []
    pos = 0  # next token of `ids` to place
    for gap in range(n_gaps):
        for length in spans_at.get(gap, []):
            out.append(mask_id)
            pos += length
        if gap < n_kept:
            out.append(ids[pos])
            pos += 1
    return out


def bart_denoise(ids: list[int], mask_id: int, rng: np.random.Generator, mask_ratio: float = 0.3,
                 poisson_lambda: float = 3.0, sentence_ends: Iterable[int] | None = None,
                 eos_id: int | None = None) -> tuple[list[int], list[int]]:
    """BART's (input_ids, target_ids): the input is the row with its sentences shuffled (when
    `sentence_ends` gives the ids that end one, e.g. those of '.', '!', '?') and then infilled
    (`infill`); the target is the original row. `eos_id` (when given) ends both."""
    if mask_id is None:
        raise LmforgeError("the tokenizer has no mask token, which BART's text infilling needs; use a tokenizer "
                           "with one (lmforge's own tokenizers have <|mask|>)")
    noisy = permute_sentences(ids, sentence_ends, rng) if sentence_ends is not None else list(ids)
    noisy = infill(noisy, mask_id, rng, mask_ratio, poisson_lambda)
    tail = [eos_id] if eos_id is not None else []
    return noisy + tail, list(ids) + tail
