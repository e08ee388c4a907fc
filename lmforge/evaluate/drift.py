"""Drift of a classifier's predictions: the population stability index (PSI) of the labels it predicts
now against those it predicted on its own validation split.

With e_i the share of label i among the validation split's predictions (the reference) and a_i its
share among the predictions being watched,

    PSI = sum_i (a_i - e_i) ln(a_i / e_i)

a share of 0 counted as 1e-4 so that every term is finite. Each term is >= 0 (a_i - e_i and the log
have the same sign), so PSI is 0 only for the same distribution. The usual reading: below 0.1 nothing
moved, 0.1 to 0.25 a moderate shift, above 0.25 a large one (the default warning threshold).

Worked example (docs/monitoring.md; tests/test_monitor.py checks it): validation predicted
positive 50%, negative 50%; served traffic is 80% positive, 20% negative:
    (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5) = 0.3 x 0.4700 + 0.3 x 0.9163 = 0.4159
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

FLOOR = 1e-4  # the share an empty label is counted as
THRESHOLD = 0.25  # PSI above which the predictions have shifted a lot


def shares(counts: dict[str, float], labels: list[str]) -> list[float]:
    """Each label's share of `counts` (in `labels` order)."""
    total = sum(counts.get(label, 0) for label in labels)
    return [counts.get(label, 0) / total if total else 0.0 for label in labels]


def psi(reference: dict[str, float], actual: dict[str, float], labels: list[str] | None = None) -> float:
    """The population stability index of the label counts `actual` against `reference` (formula above)."""
    labels = labels or sorted(set(reference) | set(actual))
    e, a = shares(reference, labels), shares(actual, labels)
    return sum((ai - ei) * math.log(ai / ei) for ai, ei in ((max(x, FLOOR), max(y, FLOOR)) for x, y in zip(a, e)))


def reference_counts(run: str | Path) -> tuple[dict[str, int], str] | None:
    """The labels a fine-tuned classifier run predicted on its validation split (report.json's
    validation_predicted), or failing that on its test split (the confusion matrix's columns), with
    which split it was; None when the run has neither (a Hugging Face directory, an older run)."""
    try:
        report = json.loads((Path(run) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    if isinstance(report.get("validation_predicted"), dict):
        return {str(k): int(v) for k, v in report["validation_predicted"].items()}, "validation split"
    test = report.get("test") or {}
    labels, cm = test.get("labels"), test.get("confusion_matrix")
    if isinstance(labels, list) and isinstance(cm, list) and cm:
        return {label: int(sum(row[j] for row in cm)) for j, label in enumerate(labels)}, "test split"
    return None


def drift_line(run: str | Path, predicted: list[str], labels: list[str], threshold: float = THRESHOLD) -> dict | None:
    """The drift entry of a prediction report: PSI of `predicted` against the run's validation split."""
    found = reference_counts(run)
    if found is None or not predicted:
        return None
    value = psi(found[0], Counter(predicted), labels)
    return {"psi": round(value, 4), "threshold": threshold, "shifted": value > threshold, "rows": len(predicted),
            "reference": found[1]}
