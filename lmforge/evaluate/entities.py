"""Entity-level scores for tagged sequences (named entities, chunks): what CoNLL reports.

Word tags in the BIO family mark spans: B-X begins an entity of type X, I-X continues it, O is
outside; IOBES adds E-X (ends) and S-X (a one-word entity). An entity counts only when its type and
both of its ends match the gold one exactly:

    precision = |gold spans & predicted spans| / |predicted spans|
    recall    = |gold spans & predicted spans| / |gold spans|
    F1        = 2 precision recall / (precision + recall)

Spans are read with conlleval's rules (seqeval's default mode): an I-X after O or after another
type starts a new entity, so a tagger that never writes B- is still scored. Per-word accuracy can
be high while entity F1 is low: in "B-PER I-PER O" predicted as "B-PER O O" two of three words are
right, but the one entity is wrong.
"""

from __future__ import annotations

import re
from typing import Sequence

_TAG = re.compile(r"^([BIESLU])[-_](.+)$")


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "") for O and for anything that is not a chunk tag."""
    m = _TAG.match(tag)
    if not m:
        return "O", ""
    prefix = {"L": "E", "U": "S"}.get(m.group(1), m.group(1))  # BILOU spells E and S as L and U
    return prefix, m.group(2)


def is_chunk_tagset(labels: Sequence[str]) -> bool:
    """Whether tags are BIO / IOBES style: each is O or PREFIX-TYPE, and at least one is the latter."""
    return any(_TAG.match(t) for t in labels) and all(t == "O" or _TAG.match(t) for t in labels)


def _ends(prev: str, prev_type: str, prefix: str, type_: str) -> bool:
    """Whether the entity open at the previous word ends before this word."""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I"):
        return prefix in ("B", "S", "O") or type_ != prev_type
    return False


def _starts(prev: str, prev_type: str, prefix: str, type_: str) -> bool:
    """Whether an entity starts at this word."""
    if prefix in ("B", "S"):
        return True
    if prefix in ("I", "E"):
        return prev in ("E", "S", "O") or type_ != prev_type
    return False


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one sequence as (type, first word, last word)."""
    spans, start, prev, prev_type = set(), None, "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):  # a final O closes the last entity
        prefix, type_ = split_tag(tag)
        if start is not None and _ends(prev, prev_type, prefix, type_):
            spans.add((prev_type, start, i - 1))
            start = None
        if _starts(prev, prev_type, prefix, type_):
            start = i
        prev, prev_type = prefix, type_
    return spans


def _prf(tp: int, n_pred: int, n_true: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": n_true}


def entity_report(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict:
    """Entity precision, recall and F1 per type, micro (over all entities) and macro (mean over
    types), for sequences of gold and predicted tags (one list per sentence, equal lengths)."""
    if len(y_true) != len(y_pred) or any(len(t) != len(p) for t, p in zip(y_true, y_pred)):
        raise ValueError("gold and predicted tag sequences must match in number and length")
    gold, pred = set(), set()
    for s, (t, p) in enumerate(zip(y_true, y_pred)):
        gold |= {(s, *e) for e in entity_spans(t)}
        pred |= {(s, *e) for e in entity_spans(p)}
    return span_report(gold, pred)


def span_report(gold: set, pred: set) -> dict:
    """Exact-match precision, recall and F1 per type, micro and macro, of spans given as tuples
    (row, type, start, end): a found span counts only where a gold one has the same type and ends.
    (Entities of tags use word positions; anonymisation's spans use characters.)"""
    types = sorted({e[1] for e in gold | pred})
    per_type = {}
    for ty in types:
        g, q = {e for e in gold if e[1] == ty}, {e for e in pred if e[1] == ty}
        per_type[ty] = _prf(len(g & q), len(q), len(g))
    macro = {k: sum(v[k] for v in per_type.values()) / len(types) if types else 0.0 for k in ("precision", "recall", "f1")}
    return {"micro": _prf(len(gold & pred), len(pred), len(gold)), "macro": {**macro, "support": len(gold)},
            "per_type": per_type, "gold_entities": len(gold), "predicted_entities": len(pred)}
