"""ROUGE-1, ROUGE-2 and ROUGE-L for summaries, computed by rouge-score on tokens that keep every
language's letters.

For one hypothesis (the model's summary) against its reference, on tokens:

    ROUGE-N  overlap = n-grams shared, with multiplicity (min of the two counts)
             P = overlap / hypothesis n-grams,   R = overlap / reference n-grams
    ROUGE-L  overlap = length of the longest common subsequence (in order, gaps allowed)
             P = LCS / hypothesis length,        R = LCS / reference length
    F1 = 2 P R / (P + R)     (0 when P + R = 0)

The corpus score is the mean over pairs of each pair's P, R and F1 (so a short pair counts as much
as a long one, unlike BLEU's pooled counts). All scores here are percentages, 0-100, as sacrebleu's.

rouge-score's own tokenizer lower-cases and then drops every character outside [a-z0-9]: "canción"
becomes "canci" + "n" and Chinese text becomes no tokens at all (ROUGE 0 for any Chinese summary).
RougeTokenizer keeps letters and digits of every script, lower-cased (Unicode NFC first, so a
decomposed accent stays in its word), and makes each CJK character a token, as Chinese has no
spaces between words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.evaluate.corpus import check_pairs, mean_ci
from lmforge.tokenizer import CJK

KINDS = ("rouge1", "rouge2", "rougeL")
# One CJK character, or a run of letters and digits of any other script ([^\W_] is \w without "_").
_TOKEN = re.compile(f"[{CJK}]|[^\\W_{CJK}]+")
_ASCII_WORD = re.compile(r"[a-z]+")


class RougeTokenizer:
    """rouge-score's tokenizer interface (`tokenize(text) -> list[str]`) for any language.

    Stemming (`stem=True`) applies the Porter stemmer, as rouge-score's `use_stemmer` does, to
    ASCII words longer than 3 letters, so "running" and "runs" both match "run". It is off by
    default: Porter's rules are English ones. On Spanish they give general -> "gener" but
    generales -> "general", and cut canciones -> "cancion" while leaving accented canción alone, so
    what matches would depend on spelling, not meaning, and scores across languages would not be
    comparable. Turn it on to compare with English results reported with stemming (most
    CNN/DailyMail papers use rouge-score's use_stemmer=True).
    """

    def __init__(self, stem: bool = False):
        self.stem = stem
        if stem:
            from nltk.stem import porter  # rouge-score depends on nltk already

            self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        tokens = _TOKEN.findall(unicodedata.normalize("NFC", text).lower())
        if self.stem:
            tokens = [self._stemmer.stem(t) if len(t) > 3 and _ASCII_WORD.fullmatch(t) else t for t in tokens]
        return tokens


def rouge_pairs(hypotheses: Sequence[str], references: Sequence[str], stem: bool = False) -> dict[str, np.ndarray]:
    """Each pair's scores: {"rouge1" | "rouge2" | "rougeL": (n, 3) array of precision, recall, F1}, percent."""
    hyps, refs = check_pairs(hypotheses, references)
    from rouge_score.rouge_scorer import RougeScorer  # imported here: it loads nltk, over a second

    scorer = RougeScorer(list(KINDS), tokenizer=RougeTokenizer(stem))
    out = {k: np.empty((len(hyps), 3)) for k in KINDS}
    for i, (h, r) in enumerate(zip(hyps, refs)):
        scores = scorer.score(r, h)  # rouge-score takes the reference (its "target") first
        for k in KINDS:
            out[k][i] = (scores[k].precision, scores[k].recall, scores[k].fmeasure)
    return {k: 100.0 * v for k, v in out.items()}


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str], stem: bool = False) -> dict:
    """Corpus ROUGE: {"rouge1" | "rouge2" | "rougeL": {"precision", "recall", "f1"}, "n"}, each the
    mean over pairs, in percent."""
    pairs = rouge_pairs(hypotheses, references, stem)
    # Column by column (not v.mean(0)), so the sums match text_report's F1 means to the last bit.
    out: dict = {k: {name: float(v[:, j].mean()) for j, name in enumerate(("precision", "recall", "f1"))}
                 for k, v in pairs.items()}
    out["n"] = len(pairs["rougeL"])
    return out


def rouge_ci(hypotheses: Sequence[str], references: Sequence[str], kind: str = "rougeL", stem: bool = False,
             resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap percentile interval (lmforge.evaluate.corpus) of the corpus F1 of `kind`."""
    if kind not in KINDS:
        raise LmforgeError(f"{{setting}} is not a ROUGE score lmforge computes; use one of {', '.join(KINDS)}",
                           "kind", kind)
    f1 = rouge_pairs(hypotheses, references, stem)[kind][:, 2]
    return mean_ci(f1, resamples, seed, level)

