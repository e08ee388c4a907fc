"""Baselines a Transformer has to beat: a bigram language model for pretraining, and for
text generation the copy of the source (translation) and lead-1 (summarisation).

The bigram language model uses interpolated absolute discounting (Ney et al. 1994) with discount d,
from counts c(.) on the training tokens:

    P(w | v) = max(c(v, w) - d, 0) / c(v) + d * N1+(v, .) / c(v) * P_uni(w)
    P_uni(w) = (c(w) + 1) / (N + V)                       add-one unigram, so no token has P = 0

N1+(v, .) is the number of distinct tokens seen after v; a context never seen falls back to P_uni.

Copying the source scores above 0 wherever the languages share names, numbers and punctuation; a
translation model must beat it by far. Lead-1, the first sentence of the article as its summary,
is strong on news, whose first sentence usually says what happened: a summariser that cannot beat
it has learned little.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from lmforge.evaluate.corpus import check_texts
from lmforge.evaluate.perplexity import summarize


def bigram_eval(train: np.ndarray, val: np.ndarray, vocab_size: int, discount: float = 0.75,
                bytes_per_token: float | None = None) -> dict:
    """Perplexity (and bits per byte) on `val` of a bigram model counted on `train`."""
    tr = np.asarray(train, dtype=np.int64)
    va = np.asarray(val, dtype=np.int64)
    V = int(vocab_size)
    uni = np.bincount(tr, minlength=V).astype(np.float64)
    p_uni = (uni + 1.0) / (uni.sum() + V)
    pairs, counts = np.unique(tr[:-1] * V + tr[1:], return_counts=True)  # sorted pair codes
    ctx = np.bincount(tr[:-1], minlength=V).astype(np.float64)  # c(v) as a context
    distinct = np.bincount(pairs // V, minlength=V).astype(np.float64)  # N1+(v, .)

    v, w = va[:-1], va[1:]
    codes = v * V + w
    idx = np.clip(np.searchsorted(pairs, codes), 0, len(pairs) - 1)
    c_vw = np.where(pairs[idx] == codes, counts[idx], 0).astype(np.float64)
    c_v = ctx[v]
    seen = c_v > 0
    safe = np.where(seen, c_v, 1.0)
    p = np.where(seen, np.maximum(c_vw - discount, 0.0) / safe + discount * distinct[v] / safe * p_uni[w], p_uni[w])
    total = float(-np.log(p).sum())
    return summarize(total, len(w), bytes_per_token)


# ---- text generation ----

_CLOSERS = "\"'\u201d\u2019\u00bb)\\]\uff09\u300d\u300f\u300b"  # " ' ” ’ » ) ] ） 」 』 》
# A sentence ends at a run of . ! ? (ASCII) or 。！？ (CJK), with any closing quotes or brackets
# after it, or at a blank line (a paragraph that ends without punctuation, such as a headline).
_END = re.compile(f"(?P<ascii>[.!?]+)[{_CLOSERS}]*|[\u3002\uff01\uff1f]+[{_CLOSERS}]*|\n[ \t]*\n")
_NEXT = re.compile(r"(\s*)(\S?)")  # the spaces after an end, then the next character ("" at the end)


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, in order; text after the last end is a sentence too.

    An ASCII end counts only before a space (or the end of the text) and not before a lower-case
    letter, so 3.5, e.g. and '"Stop!" he said.' stay whole; Chinese ends need no space after them.
    Abbreviations before a capital (Mr. Smith) are still split: no word list is kept."""
    sentences, start = [], 0
    for m in _END.finditer(text):
        if m.group("ascii") is not None:
            space, following = _NEXT.match(text, m.end()).groups()
            if (following and not space) or following.islower():
                continue
        piece = text[start:m.end()].strip()
        if piece:
            sentences.append(piece)
        start = m.end()
    tail = text[start:].strip()
    return sentences + [tail] if tail else sentences


def lead_1(bodies: Sequence[str]) -> list[str]:
    """Summarisation baseline: each body's first sentence (the whole body when it has no sentence
    end; "" for an empty one)."""
    return [next(iter(split_sentences(b)), "") for b in check_texts(bodies, "bodies")]


def copy_source(sources: Sequence[str]) -> list[str]:
    """Translation baseline: each source text unchanged, as its own translation."""
    return check_texts(sources, "sources")
