"""A bigram language model: the baseline a Transformer has to beat.

Interpolated absolute discounting (Ney et al. 1994) with discount d, from counts c(.) on the
training tokens:

    P(w | v) = max(c(v, w) - d, 0) / c(v) + d * N1+(v, .) / c(v) * P_uni(w)
    P_uni(w) = (c(w) + 1) / (N + V)                       add-one unigram, so no token has P = 0

N1+(v, .) is the number of distinct tokens seen after v; a context never seen falls back to P_uni.
"""

from __future__ import annotations

import numpy as np

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
