"""Extractive question answering: SQuAD-style exact match and token F1, and the best answer span.

Both answers are normalised first: lowercase, drop punctuation (ASCII and Unicode, e.g. "，。"),
drop the English articles a / an / the, collapse whitespace. Then

    EM = 1 if the normalised strings are equal, else 0
    F1 = 2 P R / (P + R),  P = overlap / |pred tokens|,  R = overlap / |gold tokens|

where overlap counts shared tokens with multiplicity. Tokens are whitespace-separated words,
except that when either answer contains a CJK character, every CJK character is a token of its
own (Chinese and Japanese are written without spaces) and each run of other non-space characters
is one token. Two empty answers score F1 = 1; one empty answer scores 0.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError
from lmforge.tokenizer import CJK

_CJK = re.compile(f"[{CJK}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str, per_char: bool) -> list[str]:
    if not per_char:
        return text.split()
    return re.findall(f"[{CJK}]|[^\\s{CJK}]+", text)  # one CJK char, or a run of others


def exact_match(pred: str, gold: str) -> float:
    return float(normalize(pred) == normalize(gold))


def f1(pred: str, gold: str) -> float:
    p, g = normalize(pred), normalize(gold)
    per_char = bool(_CJK.search(p) or _CJK.search(g))
    pt, gt = _tokens(p, per_char), _tokens(g, per_char)
    if not pt or not gt:
        return float(pt == gt)
    overlap = sum((Counter(pt) & Counter(gt)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pt), overlap / len(gt)
    return 2 * precision * recall / (precision + recall)


def qa_scores(preds: Sequence[str], golds: Sequence[str | Sequence[str]]) -> dict:
    """Mean EM and F1 in percent. Each gold is one answer or a list of acceptable ones (the best
    counts); an empty list means unanswerable, so only an empty prediction scores."""
    if len(preds) != len(golds):
        raise LmforgeError(f"{len(preds)} predictions but {len(golds)} gold answers; pass one prediction per question")
    if not preds:
        raise LmforgeError("no questions to score; pass at least one prediction and gold answer")
    em = f = 0.0
    for pred, gold in zip(preds, golds):
        answers = [gold] if isinstance(gold, str) else (list(gold) or [""])
        em += max(exact_match(pred, a) for a in answers)
        f += max(f1(pred, a) for a in answers)
    n = len(preds)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n, "n": n}


def best_span(start_logits, end_logits, max_answer_len: int = 30, allowed=None):
    """The span (start, end) maximising start_logits[start] + end_logits[end] subject to
    start <= end < start + max_answer_len, with both ends in `allowed` (a bool mask of the
    positions an answer may use, e.g. the context tokens) when it is given.

    (T,) logits give two ints; (B, T) give two (B,) long tensors. NumPy arrays are accepted.
    """
    s, e = torch.as_tensor(start_logits), torch.as_tensor(end_logits)
    if s.shape != e.shape or s.dim() not in (1, 2):
        raise LmforgeError(f"start and end logits must both be (T,) or (B, T), got {tuple(s.shape)} and "
                           f"{tuple(e.shape)}; pass one logit per token for each")
    if max_answer_len < 1:
        raise LmforgeError(f"max_answer_len is {max_answer_len}; set it to 1 or more")
    single = s.dim() == 1
    if single:
        s, e = s[None], e[None]
    B, T = s.shape
    L = min(max_answer_len, T)
    if allowed is None:
        ok = torch.ones(B, T, dtype=torch.bool, device=s.device)
    else:
        ok = torch.as_tensor(allowed, dtype=torch.bool, device=s.device).reshape(B, T)  # (B, T)
    # Windows over the end positions: [b, i, d] is end i + d, so only the L spans from each start
    # are scored ((B, T, L), not (B, T, T)); ends past T are padding that never wins.
    e_win = F.pad(e.double(), (0, L - 1), value=-torch.inf).unfold(1, L, 1)  # (B, T, L)
    ok_win = F.pad(ok, (0, L - 1), value=False).unfold(1, L, 1)  # (B, T, L)
    valid = ok[:, :, None] & ok_win  # both ends allowed (and the end inside the sequence)
    if not valid.flatten(1).any(1).all():
        row = int((~valid.flatten(1).any(1)).nonzero()[0])
        raise LmforgeError(f"row {row} has no allowed position for an answer; allow at least one token in the mask")
    scores = (s.double()[:, :, None] + e_win).masked_fill(~valid, -torch.inf)  # (B, T, L)
    flat = scores.flatten(1).argmax(1)  # (B,); ties go to the earliest start, then the shortest span
    start = flat // L
    end = start + flat % L
    return (int(start[0]), int(end[0])) if single else (start, end)
