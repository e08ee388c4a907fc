"""Classification and QA metrics against values computed by hand."""

import itertools
import json
import os

import numpy as np
import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.evaluate import (best_span, classification_report, exact_match, f1, format_report, majority_baseline,
                              plot_confusion_matrix, qa_scores)

# Three classes, ten examples.
#   true a (4): predicted a a a b    true b (3): predicted b b c    true c (3): predicted c a a
# Confusion matrix (rows = true, columns = predicted):
#        a  b  c
#   a    3  1  0      support 4
#   b    0  2  1      support 3
#   c    2  0  1      support 3
#   predicted: a 5, b 3, c 2
# a: P = 3/5, R = 3/4, F1 = 2 * 0.6 * 0.75 / 1.35 = 2/3
# b: P = 2/3, R = 2/3, F1 = 2/3
# c: P = 1/2, R = 1/3, F1 = 2 * (1/6) / (5/6) = 2/5
# accuracy = (3 + 2 + 1) / 10 = 0.6
# macro P = (54 + 60 + 45) / 90 / 3 = 53/90; macro R = (3/4 + 2/3 + 1/3) / 3 = 7/12
# macro F1 = (2/3 + 2/3 + 2/5) / 3 = 26/45
# weighted P = (4 * 0.6 + 3 * 2/3 + 3 * 0.5) / 10 = 0.59; weighted R = accuracy = 0.6
# weighted F1 = (4 * 2/3 + 3 * 2/3 + 3 * 2/5) / 10 = 44/75
# micro P = R = F1 = 6 / 10 (every error is one FP and one FN)
Y_TRUE = ["a"] * 4 + ["b"] * 3 + ["c"] * 3
Y_PRED = ["a", "a", "a", "b", "b", "b", "c", "c", "a", "a"]


def test_three_class_by_hand():
    r = classification_report(Y_TRUE, Y_PRED)
    assert r["labels"] == ["a", "b", "c"] and r["n"] == 10
    assert r["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [2, 0, 1]]
    assert r["accuracy"] == pytest.approx(0.6)
    expected = {"a": (3 / 5, 3 / 4, 2 / 3, 4), "b": (2 / 3, 2 / 3, 2 / 3, 3), "c": (1 / 2, 1 / 3, 2 / 5, 3)}
    for name, (p, rec, f, s) in expected.items():
        m = r["per_class"][name]
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, rec, f))
        assert m["support"] == s
    assert r["macro"] == pytest.approx({"precision": 53 / 90, "recall": 7 / 12, "f1": 26 / 45})
    assert r["weighted"] == pytest.approx({"precision": 0.59, "recall": 0.6, "f1": 44 / 75})
    assert r["micro"] == pytest.approx({"precision": 0.6, "recall": 0.6, "f1": 0.6})


def test_micro_f1_equals_accuracy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t, p = rng.integers(0, 5, 50).tolist(), rng.integers(0, 5, 50).tolist()
        r = classification_report(t, p)
        assert r["micro"]["f1"] == pytest.approx(r["accuracy"])
        assert r["accuracy"] == pytest.approx(np.mean(np.array(t) == np.array(p)))


def test_zero_division_counts_as_zero():
    # b is never predicted (P = 0/0) and z never occurs at all (P = R = 0/0): all count as 0.
    r = classification_report(["a", "a", "b"], ["a", "a", "a"], labels=["a", "b", "z"])
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # a: P = 2/3, R = 1, F1 = 0.8; macro F1 = (0.8 + 0 + 0) / 3
    assert r["per_class"]["a"]["f1"] == pytest.approx(0.8)
    assert r["macro"]["f1"] == pytest.approx(0.8 / 3)
    assert r["confusion_matrix"] == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_int_labels_with_and_without_names():
    t = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    p = [0, 0, 0, 1, 1, 1, 2, 2, 0, 0]  # the hand example, a b c -> 0 1 2
    by_int = classification_report(t, p)
    assert by_int["labels"] == ["0", "1", "2"]
    named = classification_report(t, p, labels=["a", "b", "c"])
    assert named["labels"] == ["a", "b", "c"]
    assert named["confusion_matrix"] == classification_report(Y_TRUE, Y_PRED)["confusion_matrix"]
    assert classification_report(np.array(t), np.array(p))["accuracy"] == pytest.approx(0.6)  # numpy ints too


def test_label_order_and_errors():
    r = classification_report(Y_TRUE, Y_PRED, labels=["c", "b", "a"])
    assert r["confusion_matrix"] == [[1, 0, 2], [1, 2, 0], [0, 1, 3]]
    with pytest.raises(LmforgeError, match="not among"):
        classification_report(["a", "x"], ["a", "a"], labels=["a", "b"])
    with pytest.raises(LmforgeError, match="one prediction per example"):
        classification_report(["a", "b"], ["a"])
    with pytest.raises(LmforgeError, match="no examples"):
        classification_report([], [])


def test_report_is_json_and_formats():
    r = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]), labels=["negative", "positive"])
    assert json.loads(json.dumps(r)) == r
    text = format_report(r)
    for word in ("negative", "positive", "macro avg", "micro avg", "weighted avg", "accuracy", "confusion matrix"):
        assert word in text
    long = format_report(classification_report(["x" * 50, "y"], ["y", "y"]))
    assert "x" * 30 not in long and "…" in long  # long labels cut
    lines = long.splitlines()
    assert len({len(line) for line in lines[2:5]}) == 1  # the per-class rows line up


def test_majority_baseline():
    out = majority_baseline(["pos", "neg", "pos", "neu"], ["pos", "neg", "neg", "neg"])
    assert out == {"label": "pos", "accuracy": 0.25, "n": 4}
    assert majority_baseline(np.array([2, 2, 1]), [2, 1])["label"] == 2
    assert json.dumps(majority_baseline(np.array([2, 2, 1]), [2, 1]))


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_png(tmp_path, normalize):
    path = tmp_path / "out" / "cm.png"
    plot_confusion_matrix(classification_report(Y_TRUE, Y_PRED), path, normalize=normalize, title="test")
    assert _is_png(path)
    assert os.listdir(path.parent) == ["cm.png"]  # no temporary file left behind


# ---- QA ----

def test_exact_match_normalisation():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("an  apple, a day", "Apple day") == 1.0  # articles and punctuation go, spaces collapse
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("北京。", "北京") == 1.0  # CJK punctuation goes too


def test_f1_by_hand():
    # pred "the big red barn" -> [big, red, barn]; gold "a red barn" -> [red, barn]
    # overlap 2: P = 2/3, R = 2/2, F1 = 2 * (2/3) / (5/3) = 0.8
    assert f1("the big red barn", "a red barn") == pytest.approx(0.8)
    assert f1("cat", "dog") == 0.0
    assert f1("", "") == 1.0 and f1("the", "") == 1.0 and f1("", "cat") == 0.0  # "the" normalises to nothing
    # repeated tokens count with multiplicity: [a_tok, a_tok] vs [a_tok]: overlap 1, P = 1/2, R = 1, F1 = 2/3
    assert f1("go go", "go") == pytest.approx(2 / 3)


def test_f1_chinese_per_character():
    # pred 北京大学 -> 北 京 大 学; gold 北京 -> 北 京: overlap 2, P = 2/4, R = 2/2, F1 = 2/3
    assert f1("北京大学", "北京") == pytest.approx(2 / 3)
    assert exact_match("北京大学", "北京") == 0.0
    # mixed: pred "iPhone 手机" -> [iphone, 手, 机]; gold "iPhone" -> [iphone]: P = 1/3, R = 1, F1 = 0.5
    assert f1("iPhone 手机", "iPhone") == pytest.approx(0.5)


def test_qa_scores_max_over_golds():
    preds = ["The cat", "北京大学", "blue", ""]
    golds = [["a dog", "cat"], "北京", ["red"], []]  # [] = unanswerable: the empty prediction is right
    out = qa_scores(preds, golds)
    # EM: 1, 0, 0, 1 -> 50%; F1: 1, 2/3, 0, 1 -> (8/3) / 4 = 66.67%
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (8 / 3) / 4)
    assert out["n"] == 4
    with pytest.raises(LmforgeError, match="one prediction per question"):
        qa_scores(["a"], ["a", "b"])


def _brute_span(s, e, max_len, allowed):
    best, arg = -float("inf"), None
    for i, j in itertools.product(range(len(s)), repeat=2):
        if i <= j < i + max_len and allowed[i] and allowed[j] and s[i] + e[j] > best:
            best, arg = s[i] + e[j], (i, j)
    return arg


@pytest.mark.parametrize("max_len", [1, 3, 30])
def test_best_span_matches_brute_force(max_len):
    g = torch.Generator().manual_seed(max_len)
    B, T = 6, 17
    s, e = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    allowed = torch.rand(B, T, generator=g) > 0.4
    allowed[:, 5] = True  # every row has somewhere to answer
    for mask in (None, allowed):
        start, end = best_span(s, e, max_answer_len=max_len, allowed=mask)
        assert start.shape == end.shape == (B,)
        for b in range(B):
            ok = [True] * T if mask is None else mask[b].tolist()
            assert (int(start[b]), int(end[b])) == _brute_span(s[b].tolist(), e[b].tolist(), max_len, ok)
    # one row, numpy in, ints out
    i, j = best_span(s[0].numpy(), e[0].numpy(), max_answer_len=max_len, allowed=allowed[0].numpy())
    assert (i, j) == _brute_span(s[0].tolist(), e[0].tolist(), max_len, allowed[0].tolist())


def test_best_span_by_hand_and_errors():
    # start 1 (5) + end 3 (9) would be best but is 3 tokens long; with max length 2: start 2 + end 3 = 10
    assert best_span([0.0, 5, 1, 0], [0.0, 0, 0, 9], max_answer_len=2) == (2, 3)
    assert best_span([0.0, 5, 1, 0], [0.0, 0, 0, 9], max_answer_len=3) == (1, 3)
    with pytest.raises(LmforgeError, match="no allowed position"):
        best_span(torch.zeros(2, 4), torch.zeros(2, 4), allowed=torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]).bool())
    with pytest.raises(LmforgeError, match="max_answer_len"):
        best_span([0.0], [0.0], max_answer_len=0)
