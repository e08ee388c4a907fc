"""Classification metrics: accuracy, precision, recall, F1, the confusion matrix, and a baseline.

For each class c, counting over the n examples:

    TP_c = predicted c and truly c;  FP_c = predicted c, truly not;  FN_c = truly c, predicted not
    P_c  = TP_c / (TP_c + FP_c)          precision: of what we called c, how much was c
    R_c  = TP_c / (TP_c + FN_c)          recall: of what was c, how much we found
    F1_c = 2 P_c R_c / (P_c + R_c)       harmonic mean of the two

A ratio whose denominator is 0 (a class never predicted, or never present) counts as 0.

Averages over the classes:
    macro     mean of P_c, R_c, F1_c: every class counts the same, however rare
    weighted  the same, weighted by support (the number of true examples of c)
    micro     P, R, F1 of the summed TP, FP, FN. With exactly one label per example every error is
              one FP (for the predicted class) and one FN (for the true one), so sum FP = sum FN and
              micro P = micro R = micro F1 = accuracy.

Macro F1 is the mean of the per-class F1, not the F1 of macro P and macro R.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0  # the zero-division convention above


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _names(y_true: list, y_pred: list, labels: Sequence[str] | None) -> tuple[list[str], list[int], list[int]]:
    """Class names in display order, and both label sequences as indices into them."""
    if labels is None:
        seen = set(y_true) | set(y_pred)
        try:
            order = sorted(seen)  # ints numerically, strings alphabetically
        except TypeError:  # mixed ints and strings
            order = sorted(seen, key=str)
        names = [str(v) for v in order]
        index = {v: i for i, v in enumerate(order)}
    else:
        names = [str(v) for v in labels]
        if all(_is_int(v) for v in y_true + y_pred) and all(isinstance(v, str) for v in labels):
            index = {i: i for i in range(len(names))}  # int labels index into the names
        else:
            index = {v: i for i, v in enumerate(labels)}
        unknown = sorted({str(v) for v in y_true + y_pred if v not in index})
        if unknown:
            raise LmforgeError(f"labels {', '.join(unknown[:5])} are not among the {len(names)} given class names; "
                               "add them to `labels` or leave `labels` out to use every label seen")
    if len(set(names)) != len(names):
        raise LmforgeError("two classes have the same name once written as text; give every class a distinct name")
    return names, [index[v] for v in y_true], [index[v] for v in y_pred]


def confusion_matrix(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true class, column = predicted class."""
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def classification_report(y_true: Sequence, y_pred: Sequence, labels: Sequence[str] | None = None) -> dict:
    """Accuracy, per-class and averaged P/R/F1, and the confusion matrix, as a JSON-ready dict.

    `y_true` and `y_pred` hold label strings or ints. `labels` gives the class names in display
    order (classes that never occur get rows of 0); with int inputs and string names, label i is
    `labels[i]`. Without it, the classes are every label seen, sorted.
    """
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise LmforgeError(f"{len(y_true)} true labels but {len(y_pred)} predictions; pass one prediction per example")
    if not y_true:
        raise LmforgeError("no examples to score; pass at least one label and prediction")
    names, t, p = _names(y_true, y_pred, labels)
    k, n = len(names), len(t)
    cm = confusion_matrix(np.asarray(t), np.asarray(p), k)
    tp = np.diag(cm)
    support = cm.sum(axis=1)  # TP + FN: true examples of each class
    predicted = cm.sum(axis=0)  # TP + FP

    per_class = {}
    for i, name in enumerate(names):
        prec, rec = _ratio(tp[i], predicted[i]), _ratio(tp[i], support[i])
        per_class[name] = {"precision": prec, "recall": rec, "f1": _ratio(2 * prec * rec, prec + rec),
                           "support": int(support[i])}
    cols = {m: np.array([per_class[c][m] for c in names]) for m in ("precision", "recall", "f1")}
    macro = {m: float(v.mean()) for m, v in cols.items()}
    weighted = {m: _ratio((v * support).sum(), n) for m, v in cols.items()}
    micro_p, micro_r = _ratio(tp.sum(), predicted.sum()), _ratio(tp.sum(), support.sum())
    micro = {"precision": micro_p, "recall": micro_r, "f1": _ratio(2 * micro_p * micro_r, micro_p + micro_r)}
    return {
        "n": n,
        "accuracy": _ratio(tp.sum(), n),
        "labels": names,
        "per_class": per_class,
        "macro": macro,
        "micro": micro,
        "weighted": weighted,
        "confusion_matrix": cm.tolist(),  # rows = true, columns = predicted, both in `labels` order
    }


def majority_baseline(y_train: Sequence, y_test: Sequence) -> dict:
    """Accuracy on `y_test` of always predicting the most frequent class of `y_train`
    (a tie goes to the class seen first). A model worth having is far above it."""
    if not len(y_train) or not len(y_test):
        raise LmforgeError("the majority baseline needs training and test labels; pass non-empty label lists")
    label = Counter(list(y_train)).most_common(1)[0][0]  # most_common keeps first-seen order on ties
    hits = sum(1 for y in y_test if y == label)
    label = int(label) if _is_int(label) else label  # numpy ints are not JSON
    return {"label": label, "accuracy": hits / len(y_test), "n": len(y_test)}


# ---- text ----

def _width(s: str) -> int:
    """Terminal columns: CJK and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _fit(s: str, width: int, right: bool = False) -> str:
    """`s` padded to `width` columns, cut with an ellipsis when longer."""
    if _width(s) > width:
        while _width(s) > width - 1:
            s = s[:-1]
        s += "…"
    pad = " " * (width - _width(s))
    return pad + s if right else s + pad


def format_report(report: dict, max_label: int = 20) -> str:
    """The report as a text table (per class, averages, accuracy), then the labelled confusion matrix.
    Labels longer than `max_label` columns are cut with an ellipsis."""
    names = report["labels"]
    w = max(12, min(max_label, max(_width(s) for s in names)))
    head = f"{'':{w}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}"
    lines = [head, "-" * len(head)]

    def row(name: str, m: dict, support: int) -> str:
        return f"{_fit(name, w)}  {m['precision']:9.4f}  {m['recall']:9.4f}  {m['f1']:9.4f}  {support:8d}"

    for name in names:
        lines.append(row(name, report["per_class"][name], report["per_class"][name]["support"]))
    lines.append("-" * len(head))
    for avg in ("macro", "weighted", "micro"):
        lines.append(row(f"{avg} avg", report[avg], report["n"]))
    lines.append(f"{_fit('accuracy', w)}  {'':9}  {'':9}  {report['accuracy']:9.4f}  {report['n']:8d}")

    cm = report["confusion_matrix"]
    short = [_fit(s, min(max_label, 10)).rstrip() for s in names]  # column heads stay narrow
    cw = max(max(_width(s) for s in short), len(str(max(max(r) for r in cm))))
    lines += ["", "confusion matrix (rows = true, columns = predicted)",
              _fit("", w) + "".join("  " + _fit(s, cw, right=True) for s in short)]
    for name, r in zip(names, cm):
        lines.append(_fit(name, w) + "".join(f"  {v:>{cw}d}" for v in r))
    return "\n".join(lines)


# ---- plot ----

def plot_confusion_matrix(report: dict, path: str | os.PathLike, normalize: bool = False,
                          title: str | None = None) -> Path:
    """Write the confusion matrix as a PNG heatmap: true classes down, predicted across, counts (or,
    with `normalize`, each row divided by its support, so the diagonal is per-class recall) in the
    cells, and a colour bar. The file appears complete or not at all."""
    from lmforge.interpret.attention import heatmap  # shared with attention maps: fonts, atomic write

    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)  # (k, k)
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)  # an absent class stays 0
    fmt = "{:.2f}" if normalize else "{:.0f}"
    default = "confusion matrix" + (" (row-normalised)" if normalize else "")
    return heatmap(cm, report["labels"], report["labels"], path, title=title or default,
                   xlabel="predicted", ylabel="true", cell_format=fmt, cmap="Blues")
