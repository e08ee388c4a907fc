"""Stratified splits: k-fold cross-validation and a fixed train / val / test split.

Stratified means every part keeps the class proportions of the whole: the members of each class
are shuffled (by `seed`) and dealt out across the parts, so a rare class is never missing from a
test fold by bad luck. Scores over k folds are reported as mean +- sample standard deviation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from lmforge.errors import LmforgeError


def _by_class(labels: Sequence) -> dict:
    """Class -> the indices of its members, classes in order of first appearance."""
    groups: dict = {}
    for i, y in enumerate(labels):
        groups.setdefault(y.item() if isinstance(y, np.generic) else y, []).append(i)
    if not groups:
        raise LmforgeError("no labels to split; pass one label per example")
    return groups


def stratified_kfold(labels: Sequence, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train_idx, test_idx) pairs of sorted index arrays; every index is in exactly one test fold.

    Each class is dealt round-robin over the folds, starting where the previous class stopped, so a
    class's count differs by at most 1 between folds and so do the fold sizes.
    """
    groups = _by_class(labels)
    if k < 2:
        raise LmforgeError(f"cross-validation needs at least 2 folds, got {k}; set --folds to 2 or more")
    name, members = min(groups.items(), key=lambda kv: len(kv[1]))
    if len(members) < k:
        fix = (f"lower --folds to {len(members)} or fewer" if len(members) >= 2
               else "merge or drop that class")
        raise LmforgeError(f"class {name!r} has only {len(members)} examples, fewer than the {k} folds; {fix}")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for members in groups.values():
        idx = rng.permutation(np.asarray(members))
        fold_of[idx] = (offset + np.arange(len(idx))) % k
        offset = (offset + len(idx)) % k
    everything = np.arange(len(labels))
    return [(everything[fold_of != f], everything[fold_of == f]) for f in range(k)]


def _allocate(n: int, fractions: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Split n members into parts near n * fractions (plus what earlier classes rounded away),
    at least one per part: floors first, then the largest remainders."""
    target = n * fractions + carry
    counts = np.maximum(np.floor(target).astype(np.int64), 0)
    for p in np.argsort(-(target - counts), kind="stable")[: max(0, n - counts.sum())]:
        counts[p] += 1
    while counts.sum() > n:  # the carry can ask for more than n in all
        counts[np.argmax(counts - target)] -= 1
    while (counts == 0).any():  # every part gets a member of every class
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def stratified_split(labels: Sequence, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> tuple[np.ndarray, ...]:
    """A fixed split into len(fractions) parts (train, val, test by default) of sorted index arrays.

    Each class is split in the given fractions, with at least one member in every part; rounding
    left over by one class is carried to the next, so the part sizes stay within about one example
    of n * fraction (more only where small classes need their one member per part).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 2 or (fr <= 0).any() or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6):
        raise LmforgeError(f"split fractions {tuple(fractions)} must be two or more positive numbers summing to 1; "
                           "e.g. (0.8, 0.1, 0.1)")
    groups = _by_class(labels)
    name, members = min(groups.items(), key=lambda kv: len(kv[1]))
    if len(members) < len(fr):
        raise LmforgeError(f"class {name!r} has only {len(members)} examples, too few to appear in all {len(fr)} "
                           "parts of the split; collect more examples of it, or merge or drop it")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    carry = np.zeros_like(fr)
    for members in groups.values():
        idx = rng.permutation(np.asarray(members))
        counts = _allocate(len(idx), fr, carry)
        carry = len(idx) * fr + carry - counts
        for part, chunk in zip(parts, np.split(idx, np.cumsum(counts)[:-1])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def summarize_folds(fold_metrics: Sequence[dict]) -> dict:
    """Mean, sample standard deviation (ddof=1: divides by k - 1) and the per-fold values of every
    key that is a number in every fold; std is None with a single fold, where it is undefined.

    Returns {"n_folds": k, "mean": {key: ...}, "std": {key: ...}, "values": {key: [per fold]}}.
    """
    if not fold_metrics:
        raise LmforgeError("no folds to summarise; pass one metrics dict per fold")

    def numeric(v) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool)

    keys = [key for key, v in fold_metrics[0].items() if numeric(v) and all(numeric(m.get(key)) for m in fold_metrics)]
    values = {key: [float(m[key]) for m in fold_metrics] for key in keys}
    k = len(fold_metrics)
    return {
        "n_folds": k,
        "mean": {key: float(np.mean(v)) for key, v in values.items()},
        "std": {key: float(np.std(v, ddof=1)) if k > 1 else None for key, v in values.items()},
        "values": values,
    }
