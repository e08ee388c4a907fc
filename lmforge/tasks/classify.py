"""Sequence classification: a label per row (or per pair of texts), from the first token's state
(encoders: [CLS]) or the last one's (decoders). Cross-entropy, optionally class-weighted; scored by
accuracy and macro F1 against the majority class.

    rows:     text (+ text pair) and label columns of a .csv, .tsv or .jsonl file
    predict:  {"text", "label", "probabilities"} per row; a .txt file is one document
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from lmforge.data.corpora import load_corpus
from lmforge.data.labelled import COLUMNAR, Examples, encode_texts
from lmforge.errors import LmforgeError
from lmforge.evaluate.classification import classification_report, majority_baseline
from lmforge.objectives.classify import balanced_class_weights, sequence_loss
from lmforge.tasks.base import LabelledTask, chunks, inference, label_names, plain_batch, read_columns


def class_batch(ex: Examples, idx: list[int], pad_id: int) -> dict:
    batch = plain_batch(ex, idx, pad_id)
    batch["labels"] = torch.tensor([ex.targets[i] for i in idx], dtype=torch.long)
    return batch


def predict_probs(model, ex: Examples, pad_id: int, autocast=None, batch_size: int = 64) -> tuple[torch.Tensor, float]:
    """Class probabilities (N, C) for every example, and the mean loss when targets are known."""
    probs, loss_sum, batches = [], 0.0, chunks(ex, batch_size)
    with inference(model) as device:
        for idx in batches:
            batch = class_batch(ex, idx, pad_id) if ex.targets else plain_batch(ex, idx, pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with (autocast or contextlib.nullcontext)():
                if ex.targets:
                    loss, logits = sequence_loss(model, batch)
                    loss_sum += loss.item() * len(idx)
                else:
                    logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
            probs.append(torch.softmax(logits.float(), -1).cpu())
    rows = [i for idx in batches for i in idx]
    return torch.cat(probs)[torch.tensor(rows).argsort()], loss_sum / max(1, len(ex))


def classify_texts(model, tokenizer, texts: list[str], max_len: int, pad_id: int, pairs: list[str] | None = None,
                   truncation: str = "warn", log=print) -> tuple[list[str], torch.Tensor]:
    """A classifier's label for each text (or text pair), and the class probabilities (N, C)."""
    ex = encode_texts(tokenizer, texts, max_len, not model.config.causal, pairs, truncation)
    if ex.truncated:
        log(f"warning: {ex.truncated} rows are longer than {max_len} tokens and were cut at the end")
    probs, _ = predict_probs(model, ex, pad_id)
    labels = model.config.labels
    return [labels[int(p.argmax())] for p in probs], probs


def column(path: str, name: str, required: bool = True) -> list[str] | None:
    """One column of a rows file, or None when it is absent and not required (a plain text file
    is one document: its text, and no other column)."""
    if not required and Path(path).suffix.lower() not in COLUMNAR:
        return None
    try:
        return load_corpus(path, column=name).documents
    except LmforgeError:
        if required:
            raise
        return None


def scored_rows(gold: list[str], chosen: list[str], labels: list[str], log) -> dict | None:
    """The report over the rows whose gold label is one of the run's classes; the others (a label
    the run never saw, or an empty cell) are named in a warning and under "unscored"."""
    known = [i for i, g in enumerate(gold) if g in labels]
    unknown = sorted({g for g in gold if g not in labels})
    if unknown:
        names = ", ".join(repr(g) if g.strip() else "an empty cell" for g in unknown[:5])
        n = len(gold) - len(known)
        log(f"warning: {n} row{'s have' if n != 1 else ' has'} a gold label the run was not trained on ({names}"
            f"{', ...' if len(unknown) > 5 else ''}; it knows {', '.join(labels[:8])}), so the report scores "
            f"only the other {len(known)} rows")
    if not known:
        return None
    report = classification_report([gold[i] for i in known], [chosen[i] for i in known], labels=labels)
    if unknown:
        report["unscored"] = {"rows": len(gold) - len(known), "labels": unknown}
    return report


class Classification(LabelledTask):
    """Sequence classification: cross-entropy (optionally class-weighted); accuracy and F1 on validation."""

    kind = "classify"

    @staticmethod
    def read(path: str, cfg) -> dict[str, list[str]]:
        cols = {"text_column": cfg.text_column, "label_column": cfg.label_column}
        if cfg.text_pair_column:
            cols["text_pair_column"] = cfg.text_pair_column
        rows = read_columns(path, cols)
        label_names(rows["label_column"])  # before any work: an empty label or a single class is an error
        return rows

    @staticmethod
    def classes(rows: dict) -> list[str]:
        return label_names(rows["label_column"])

    def stratify_by(self) -> list:
        return self.rows["label_column"]

    def encode(self, idx, tokenizer) -> tuple[Examples, list[int], None]:
        pick = lambda col: [self.rows[col][i] for i in idx]  # noqa: E731
        pairs = pick("text_pair_column") if "text_pair_column" in self.rows else None
        ex = encode_texts(tokenizer, pick("text_column"), self.max_len, self.encoder, pairs, self.cfg.truncation, idx)
        ex.targets = [self.label_ids[label] for label in pick("label_column")]
        return ex, list(idx), None

    def fit_on(self, train: tuple, val: tuple) -> None:
        super().fit_on(train, val)
        self.class_weights = None
        if self.cfg.class_weights:
            counts = np.bincount(self.examples.targets, minlength=len(self.labels)).tolist()
            self.class_weights = balanced_class_weights(counts)

    def batch(self, ex: Examples, idx: list[int]) -> dict:
        return class_batch(ex, idx, self.pad_id)

    def loss(self, model, batch: dict) -> torch.Tensor:
        return sequence_loss(model, batch, self.class_weights)[0]

    def score(self, model, part: tuple, autocast=None) -> dict:
        ex = part[0]
        probs, loss = predict_probs(model, ex, self.pad_id, autocast)
        report = classification_report([self.labels[t] for t in ex.targets],
                                       [self.labels[p] for p in probs.argmax(-1).tolist()], labels=self.labels)
        return {"loss": loss, "accuracy": report["accuracy"], "f1_macro": report["macro"]["f1"], "report": report}

    def gold(self, idx) -> list[str]:
        return [self.rows["label_column"][i] for i in idx]

    def test(self, model, part: tuple, train_idx, autocast=None) -> dict:
        """The test section of report.json, and the majority class's figures beside it."""
        out = {"test": self.score(model, part, autocast)["report"],
               "majority_baseline": majority_baseline(self.gold(train_idx), self.gold(part[1]))}
        if self.kind == "classify":  # what drift is measured against (evaluate/drift.py: predict, serve)
            val_probs, _ = predict_probs(model, self.val, self.pad_id, autocast)
            predicted = np.bincount(val_probs.argmax(-1).numpy(), minlength=len(self.labels)).tolist()
            out["validation_predicted"] = dict(zip(self.labels, predicted))
        return out

    @staticmethod
    def fold_scores(test: dict) -> dict:
        entities = {"entity_f1": test["entities"]["micro"]["f1"]} if "entities" in test else {}
        return {"accuracy": test["accuracy"], "f1_macro": test["macro"]["f1"], **entities}

    @staticmethod
    def predict(model, tokenizer, path: str, cfg, max_len: int, pad_id: int, log) -> tuple[list[dict], dict | None]:
        labels = model.config.labels
        texts = column(path, cfg.text_column)
        pairs = column(path, cfg.text_pair_column) if cfg.text_pair_column else None
        gold = column(path, cfg.label_column, required=False)
        chosen, probs = classify_texts(model, tokenizer, texts, max_len, pad_id, pairs, cfg.truncation, log)
        lines = [{"text": t[:200], "label": c, "probabilities": {n: round(float(v), 6) for n, v in zip(labels, p)}}
                 for t, c, p in zip(texts, chosen, probs)]
        return lines, (scored_rows(gold, chosen, labels, log) if gold is not None else None)
