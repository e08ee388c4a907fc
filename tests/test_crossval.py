"""Stratified k-fold and train/val/test splits; fold summaries against hand numbers."""

import numpy as np
import pytest

from lmforge.errors import LmforgeError
from lmforge.evaluate import stratified_kfold, stratified_split, summarize_folds

LABELS = ["pos"] * 23 + ["neg"] * 11 + ["neu"] * 7  # 41 examples, uneven classes
LABELS = [LABELS[i] for i in np.random.default_rng(1).permutation(len(LABELS))]


@pytest.mark.parametrize("k", [2, 5, 7])
def test_kfold_partitions_and_stratifies(k):
    folds = stratified_kfold(LABELS, k, seed=0)
    assert len(folds) == k
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(LABELS)))  # every index in exactly one test fold
    y = np.array(LABELS)
    for train, test in folds:
        assert not set(train.tolist()) & set(test.tolist())
        assert len(train) + len(test) == len(LABELS)
    for c in set(LABELS):
        per_fold = [int((y[te] == c).sum()) for _, te in folds]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 1


def test_kfold_is_deterministic_under_the_seed():
    a, b, c = (stratified_kfold(LABELS, 5, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_kfold_tiny_class_errors():
    with pytest.raises(LmforgeError, match=r"class 'neu' has only 7 examples.*lower --folds to 7"):
        stratified_kfold(LABELS, 10, seed=0)
    with pytest.raises(LmforgeError, match="merge or drop"):
        stratified_kfold(["a"] * 5 + ["b"], 2, seed=0)
    with pytest.raises(LmforgeError, match="at least 2 folds"):
        stratified_kfold(LABELS, 1, seed=0)


def test_kfold_int_and_numpy_labels():
    y = np.array([0, 1] * 10)
    folds = stratified_kfold(y, 4, seed=0)
    assert all(len(te) == 5 and set(y[te].tolist()) == {0, 1} for _, te in folds)


def test_stratified_split():
    parts = stratified_split(LABELS, (0.8, 0.1, 0.1), seed=0)
    assert len(parts) == 3
    together = np.concatenate(parts)
    assert sorted(together.tolist()) == list(range(len(LABELS)))  # disjoint and complete
    y = np.array(LABELS)
    for part in parts:
        assert set(y[part].tolist()) == set(LABELS)  # every class in every part
    # per class: pos 23 -> 18/2/3 or so; sizes stay near 41 * (0.8, 0.1, 0.1) = (32.8, 4.1, 4.1)
    assert [len(p) for p in parts][0] >= 30
    again = stratified_split(LABELS, (0.8, 0.1, 0.1), seed=0)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))


def test_stratified_split_balances_rounding_across_classes():
    labels = [c for c in range(20) for _ in range(15)]  # 20 classes x 15: 12 / 1.5 / 1.5 each
    sizes = [len(p) for p in stratified_split(labels, (0.8, 0.1, 0.1), seed=0)]
    assert sizes == [240, 30, 30]  # the half examples alternate between val and test


def test_stratified_split_errors():
    with pytest.raises(LmforgeError, match="class 'b' has only 2 examples"):
        stratified_split(["a"] * 10 + ["b"] * 2)
    with pytest.raises(LmforgeError, match="summing to 1"):
        stratified_split(LABELS, (0.8, 0.3))
    with pytest.raises(LmforgeError, match="positive"):
        stratified_split(LABELS, (1.0, 0.0))


def test_summarize_folds_by_hand():
    folds = [{"accuracy": 0.8, "f1": 0.7, "name": "x", "flag": True},
             {"accuracy": 0.9, "f1": 0.5, "name": "y", "flag": False},
             {"accuracy": 0.7, "f1": 0.6, "name": "z", "flag": True}]
    s = summarize_folds(folds)
    # accuracy: mean 0.8; deviations 0, 0.1, -0.1 -> std = sqrt(0.02 / (3 - 1)) = 0.1
    # f1: mean 0.6; deviations 0.1, -0.1, 0 -> std = 0.1
    assert s["n_folds"] == 3
    assert s["mean"] == pytest.approx({"accuracy": 0.8, "f1": 0.6})
    assert s["std"] == pytest.approx({"accuracy": 0.1, "f1": 0.1})
    assert s["values"]["accuracy"] == [0.8, 0.9, 0.7]
    assert "name" not in s["mean"] and "flag" not in s["mean"]  # only numbers
    assert summarize_folds([{"accuracy": 0.5}])["std"] == {"accuracy": None}
    with pytest.raises(LmforgeError):
        summarize_folds([])
