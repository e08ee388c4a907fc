"""Evaluation: perplexity and bits per byte, and baselines to compare against; classification and
QA metrics; BLEU, chrF and ROUGE for translation and summarisation; bootstrap intervals; stratified
cross-validation."""

from lmforge.evaluate.classification import (classification_report, format_report, majority_baseline,
                                             plot_confusion_matrix)
from lmforge.evaluate.crossval import stratified_kfold, stratified_split, summarize_folds
from lmforge.evaluate.qa import best_span, exact_match, f1, qa_scores
from lmforge.evaluate.rouge import rouge_ci, rouge_scores
from lmforge.evaluate.text_report import text_report
from lmforge.evaluate.translation import bleu, bleu_ci, chrf

__all__ = [
    "classification_report", "format_report", "majority_baseline", "plot_confusion_matrix",
    "stratified_kfold", "stratified_split", "summarize_folds",
    "best_span", "exact_match", "f1", "qa_scores",
    "bleu", "bleu_ci", "chrf", "rouge_ci", "rouge_scores", "text_report",
]
