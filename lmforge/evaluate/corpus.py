"""What the corpus-level text metrics (BLEU, chrF, ROUGE) share: the check that hypotheses and
references pair up one to one, and the bootstrap confidence interval.

Percentile bootstrap (Efron 1979; Koehn 2004 for BLEU): the test set of n pairs is treated as a
sample, so for b = 1..B draw n pair indices uniformly with replacement and recompute the corpus
statistic s_b on that resample. The interval at level 1 - a is

    [ percentile(s_1..s_B, 100 a/2),  percentile(s_1..s_B, 100 (1 - a/2)) ]

It is read as "a test set like this one, drawn again, would score within this range about 95% of
the time"; it measures the test set's size and spread, not any difference between two systems.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np

from lmforge.errors import LmforgeError


def check_texts(texts: Sequence[str], name: str) -> list[str]:
    """`texts` as a list, after checking it is a list of strings (one string alone is refused: it
    would be read as a list of characters)."""
    if isinstance(texts, (str, bytes)):
        raise LmforgeError(f"{name} is one string; pass a list with one text per example")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise LmforgeError(f"{name}[{i}] is {type(t).__name__}, not text; pass every item of {name} as a string")
    return texts


def check_pairs(hypotheses: Sequence[str], references: Sequence[str],
                names: tuple[str, str] = ("hypotheses", "references")) -> tuple[list[str], list[str]]:
    """Both lists, checked: strings only, the same length, at least one pair."""
    hyps, refs = check_texts(hypotheses, names[0]), check_texts(references, names[1])
    if len(hyps) != len(refs):
        raise LmforgeError(f"{len(hyps)} {names[0]} but {len(refs)} {names[1]}; pass exactly one of each per example")
    if not hyps:
        raise LmforgeError(f"no {names[0]} to score; pass at least one {names[0][:-1]} and its {names[1][:-1]}")
    return hyps, refs


def check_resampling(resamples: int, level: float) -> None:
    if not isinstance(resamples, numbers.Integral) or isinstance(resamples, bool) or resamples < 1:
        raise LmforgeError("{setting} is not a number of resamples; set it to a whole number such as 1000",
                           "resamples", resamples)
    if not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise LmforgeError("{setting} is not a confidence level; set it between 0 and 1, e.g. 0.95", "level", level)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """The percentile interval (module docstring) of `statistic`, which maps an index array (n,)
    into the n pairs to the corpus score of those pairs. The same `seed` gives the same interval."""
    check_resampling(resamples, level)
    if n < 1:
        raise LmforgeError("no pairs to resample; pass at least one hypothesis and reference")
    rng = np.random.default_rng(seed)
    # One resample at a time, not a (resamples, n) index matrix: memory stays O(n) on big test sets
    # and the draws (hence the interval) are the same whatever the chunking would have been.
    scores = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(scores, [tail, 100.0 - tail])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0,
            level: float = 0.95) -> tuple[float, float]:
    """bootstrap_ci of the mean of per-pair `values` (e.g. each pair's ROUGE-L F1)."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), resamples, seed, level)
