"""One report for translation and summarisation: BLEU and chrF (translation's headline scores),
ROUGE-1/2/L F1 (summarisation's), bootstrap intervals, and optionally a baseline scored the same way.

Every score is a percentage. The formulas are in lmforge.evaluate.translation (BLEU, chrF),
lmforge.evaluate.rouge (ROUGE) and lmforge.evaluate.corpus (the bootstrap interval).
"""

from __future__ import annotations

from collections.abc import Sequence

from lmforge.errors import LmforgeError
from lmforge.evaluate.baselines import copy_source, lead_1
from lmforge.evaluate.corpus import check_pairs, check_resampling, check_texts, mean_ci
from lmforge.evaluate.rouge import rouge_pairs
from lmforge.evaluate.translation import bleu, bleu_ci, choose_tokenizer, chrf

BASELINES = {"copy": copy_source, "lead-1": lead_1}  # translation, summarisation


def _scores(hyps: list[str], refs: list[str], tokenize: str) -> tuple[dict, dict]:
    """The point scores, and each pair's ROUGE (for the ROUGE-L interval)."""
    b, c = bleu(hyps, refs, tokenize=tokenize), chrf(hyps, refs)
    pairs = rouge_pairs(hyps, refs)
    out = {"bleu": b["score"], "bleu_signature": b["signature"], "chrf": c["score"], "chrf_signature": c["signature"]}
    out.update({k: float(v[:, 2].mean()) for k, v in pairs.items()})  # mean per-pair F1
    return out, pairs


def text_report(hypotheses: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None,
                baseline: str | None = None, lang: str | None = None, tokenize: str | None = None,
                resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Scores of one hypothesis per reference, as a JSON-ready dict:

        {"n", "bleu", "bleu_signature", "chrf", "chrf_signature", "rouge1", "rouge2", "rougeL",
         "bleu_ci": [lo, hi], "rougeL_ci": [lo, hi], "baseline": {"name", "bleu", "chrf", "rouge1", "rouge2", "rougeL"}}

    BLEU's tokenizer is `tokenize`, else the one for target language `lang`, else the one the
    references call for (zh for Chinese, 13a otherwise). `resamples=0` leaves out the intervals
    (`seed` and `level` set them otherwise). With `sources` and `baseline` ("copy" for translation:
    the source as hypothesis; "lead-1" for summarisation: the source's first sentence) the baseline's
    hypotheses are scored the same way (the same signatures), without intervals, under "baseline".
    """
    hyps, refs = check_pairs(hypotheses, references)
    if resamples != 0:
        check_resampling(resamples, level)
    if baseline is not None and baseline not in BASELINES:
        raise LmforgeError(f"{{setting}} is not a baseline; use one of {', '.join(BASELINES)} "
                           "(copy for translation, lead-1 for summarisation)", "baseline", baseline)
    if (sources is None) != (baseline is None):
        raise LmforgeError("a baseline needs both `sources` and `baseline`; pass the two together "
                           "(baseline='copy' for translation, 'lead-1' for summarisation) or neither")
    if sources is not None:
        sources = check_texts(sources, "sources")
        if len(sources) != len(hyps):
            raise LmforgeError(f"{len(sources)} sources but {len(hyps)} hypotheses; pass one source per hypothesis")
    tok = choose_tokenizer(refs, tokenize, lang)  # once, so the baseline is scored with the same tokenizer
    report, pairs = _scores(hyps, refs, tok)
    report = {"n": len(hyps), **report}
    if resamples:
        report["bleu_ci"] = list(bleu_ci(hyps, refs, tokenize=tok, resamples=resamples, seed=seed, level=level))
        report["rougeL_ci"] = list(mean_ci(pairs["rougeL"][:, 2], resamples, seed, level))
    if baseline is not None:
        scores = _scores(BASELINES[baseline](sources), refs, tok)[0]
        report["baseline"] = {"name": baseline, **{k: v for k, v in scores.items() if not k.endswith("_signature")}}
    return report
