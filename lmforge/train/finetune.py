"""Fine-tuning a pretrained model on labelled rows, with an honest evaluation.

    lmforge finetune BASE --task classify --data FILE --text-column text --label-column label --out RUN

BASE is an lmforge run (GPT, BERT or ELECTRA: its discriminator) or a Hugging Face directory. The
rows are split once, stratified by label and seeded: train (fits the weights), validation (picks
the epoch: early stopping and the kept checkpoint) and test (scored once, at the end, by the kept
checkpoint). The loop is the pretraining loop (train/trainer.py); only the task differs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from lmforge.config import DataConfig, ModelConfig, Recipe, TrainConfig, auto_or_bool
from lmforge.data.corpora import load_corpus
from lmforge.data.labelled import (COLUMNAR, Examples, ShuffledBatches, answer_span, check_length, encode_qa,
                                   encode_tagged, encode_texts, least_length, read_tagged)
from lmforge.errors import LmforgeError
from lmforge.evaluate.classification import classification_report, majority_baseline, plot_confusion_matrix
from lmforge.evaluate.crossval import stratified_kfold, stratified_split, summarize_folds
from lmforge.evaluate.qa import qa_scores
from lmforge.evaluate.entities import entity_report, is_chunk_tagset
from lmforge.models import build_model
from lmforge.objectives.classify import balanced_class_weights, sequence_loss, span_loss
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import is_checkpoint, load_checkpoint, load_pretrained, write_json
from lmforge.train.inference import (answer_spans, class_batch, padding_id, predict_probs, span_batch, tag_words,
                                     token_batch)
from lmforge.train.trainer import Trainer


@dataclass
class FinetuneConfig:
    """Everything `lmforge finetune` / `lmforge cv` take besides the base model and the data file."""

    task: str = "classify"  # classify | token | qa
    text_column: str = "text"
    text_pair_column: str | None = None  # a second text per row: [CLS] a [SEP] b [SEP]
    label_column: str = "label"
    question_column: str = "question"  # qa
    context_column: str = "context"  # qa
    answer_column: str = "answer"  # qa: the answer text, copied from the context
    doc_stride: int | None = None  # qa: tokens shared by neighbouring windows of a long context (default: a quarter)
    tokens_column: str = "tokens"  # token: a list of words per .jsonl line
    tags_column: str = "tags"  # token: their tags, one per word
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_length: int | None = None  # None: the model's context
    truncation: str = "warn"  # warn: cut long rows and say how many | error: refuse them
    class_weights: bool = False  # weigh each class by n / (C n_c) in the loss
    epochs: float = 3.0
    batch_size: int = 16
    lr: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    evals_per_epoch: int = 1
    patience: int = 2  # evaluations without a better validation metric before stopping; 0: never
    metric: str = "accuracy"  # classify: accuracy | f1_macro; token: also entity_f1 (BIO tags); qa: f1
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"  # auto (on CUDA only) | true | false: compiled layers for the steps (train/distributed.py)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in ("classify", "token", "qa"):
            raise LmforgeError(f"--task {self.task} is not supported; use classify, token or qa")
        if self.metric not in ("accuracy", "f1_macro", "entity_f1"):
            raise LmforgeError(f"--metric {self.metric} is not supported; use accuracy, f1_macro or entity_f1 (token)")
        if self.metric == "entity_f1" and self.task != "token":
            raise LmforgeError("--metric entity_f1 scores tagged entities; use it with --task token")
        self.compile = auto_or_bool(self.compile, "--compile")
        if self.doc_stride is not None and self.doc_stride < 0:
            raise LmforgeError(f"--doc-stride {self.doc_stride} is negative; give the overlap in tokens (0 or more)")
        if self.max_length is not None:
            check_length(self.max_length, least_length(self.task == "qa" or bool(self.text_pair_column)))
        for flag, value, ok, need in (
                ("--epochs", self.epochs, _finite(self.epochs) and self.epochs > 0, "a positive number, e.g. 3"),
                ("--lr", self.lr, _finite(self.lr) and self.lr > 0, "a positive number, e.g. 5e-5"),
                ("--batch-size", self.batch_size, self.batch_size >= 1, "1 or more"),
                ("--evals-per-epoch", self.evals_per_epoch, self.evals_per_epoch >= 1, "1 or more"),
                ("--patience", self.patience, self.patience >= 0, "0 (never stop early) or more"),
                ("--val-fraction", self.val_fraction, _finite(self.val_fraction) and 0 < self.val_fraction < 1,
                 "a share between 0 and 1, e.g. 0.1"),
                ("--test-fraction", self.test_fraction, _finite(self.test_fraction) and 0 < self.test_fraction < 1,
                 "a share between 0 and 1, e.g. 0.1"),
                ("warmup_fraction", self.warmup_fraction, _finite(self.warmup_fraction)
                 and 0 <= self.warmup_fraction <= 1, "a share between 0 and 1, e.g. 0.1"),
                ("weight_decay", self.weight_decay, _finite(self.weight_decay) and self.weight_decay >= 0,
                 "0 or more, e.g. 0.01")):
            if not ok:
                named = f"{flag} {value}" if flag.startswith("--") else f"{flag}={value}"
                raise LmforgeError(f"{named} cannot be used; give {need}")
        if self.val_fraction + self.test_fraction >= 1:
            raise LmforgeError(f"--val-fraction {self.val_fraction} and --test-fraction {self.test_fraction} leave no "
                               "rows to train on; make their sum less than 1, e.g. 0.1 each")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ------------------------------------------------------------------------------------------ inputs


def load_base(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, Tokenizer]:
    """The encoder (or decoder) to fine-tune: an ELECTRA run gives its discriminator."""
    model, tokenizer = load_pretrained(path, device)
    if model.config.family == "electra":
        model = model.discriminator
    if model.config.head != "none":  # an already fine-tuned run: start again from its base
        model = model.base
    return model, tokenizer


def read_rows(data: str, cfg: FinetuneConfig) -> dict[str, list[str]]:
    """The columns a task needs, as lists of strings; missing columns and empty files are errors."""
    if cfg.task == "token":
        words, tags = read_tagged(data, cfg.tokens_column, cfg.tags_column)
        return {"words": words, "tags": tags}
    if Path(data).is_file() and Path(data).suffix.lower() not in COLUMNAR:
        raise LmforgeError(f"{data} is not a file of rows with named columns; give the labelled rows as a .csv, .tsv "
                           "or .jsonl file")
    if cfg.task == "qa":
        cols = {"question": cfg.question_column, "context": cfg.context_column, "answer": cfg.answer_column}
    else:
        cols = {"text": cfg.text_column, "label": cfg.label_column}
        if cfg.text_pair_column:
            cols["pair"] = cfg.text_pair_column
    first, *rest = cols.items()
    corpus = load_corpus(data, column=first[1], label_column=rest[0][1])
    out = {first[0]: corpus.documents, rest[0][0]: corpus.labels}
    for key, column in rest[1:]:
        out[key] = load_corpus(data, column=column, label_column=first[1]).documents
    if not out[first[0]]:
        raise LmforgeError(f"{data} has no rows; give a file with a header and at least one row per class")
    if cfg.task == "qa":  # every answer must be a span of its context: checked before any work
        for i, (context, answer) in enumerate(zip(out["context"], out["answer"])):
            answer_span(context, answer, i)
    return out


def row_length(model, cfg: FinetuneConfig) -> int:
    """Tokens per row: --max-length, within the model's context."""
    context = model.config.context_length
    return context if cfg.max_length is None else min(cfg.max_length, context)


def label_names(labels: list[str]) -> list[str]:
    """The classes in sorted order; an empty label or a single class is an error."""
    if any(not str(label).strip() for label in labels):
        row = next(i for i, label in enumerate(labels) if not str(label).strip())
        raise LmforgeError(f"row {row + 1} has an empty label; give every row a label or drop it")
    names = sorted(set(labels))
    if len(names) < 2:
        raise LmforgeError(f"the label column has a single class ({names[0]!r}); classification needs at least "
                           "two classes: check --label-column and the file")
    return names


# ------------------------------------------------------------------------------------------ tasks


class Classification:
    """Sequence classification: cross-entropy (optionally class-weighted); accuracy and F1 on validation."""

    higher_is_better = True

    def __init__(self, examples: Examples, val: Examples, labels: list[str], cfg: FinetuneConfig, pad_id: int,
                 tokenizer: Tokenizer):
        self.examples, self.val, self.labels, self.cfg, self.pad_id = examples, val, labels, cfg, pad_id
        self.data = SimpleNamespace(tokenizer=tokenizer)  # what the trainer reports as its data
        self.headline = cfg.metric
        self.batches = ShuffledBatches(len(examples), cfg.batch_size, cfg.seed, [len(r) for r in examples.ids])
        self.class_weights = None
        if cfg.class_weights:
            self.class_weights = balanced_class_weights(np.bincount(examples.targets, minlength=len(labels)).tolist())

    def _batch(self, ex: Examples, idx: list[int]) -> dict:
        return class_batch(ex, idx, self.pad_id)

    def next_batch(self) -> dict:
        return self._batch(self.examples, self.batches.next_indices())

    def loss(self, model, batch: dict) -> torch.Tensor:
        return sequence_loss(model, batch, self.class_weights)[0]

    def evaluate(self, model, full: bool = False, autocast=None, examples: Examples | None = None) -> dict:
        ex = examples or self.val
        probs, loss = predict_probs(model, ex, self.pad_id, autocast)
        report = classification_report([self.labels[t] for t in ex.targets],
                                       [self.labels[p] for p in probs.argmax(-1).tolist()], labels=self.labels)
        return {"loss": loss, "accuracy": report["accuracy"], "f1_macro": report["macro"]["f1"], "report": report}

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


class TokenClassification(Classification):
    """A tag per word (on its first token): cross-entropy over tagged tokens; the report over words."""

    def _batch(self, ex: Examples, idx: list[int]) -> dict:
        return token_batch(ex, idx, self.pad_id)

    def evaluate(self, model, full: bool = False, autocast=None, examples: Examples | None = None) -> dict:
        ex = examples or self.val
        pred, true, loss = tag_words(model, ex, self.pad_id, autocast)
        true = [[self.labels[t] for t in row] for row in true]
        pred = [[self.labels[t] for t in row] for row in pred]
        report = classification_report([t for row in true for t in row], [t for row in pred for t in row], self.labels)
        out = {"loss": loss, "accuracy": report["accuracy"], "f1_macro": report["macro"]["f1"], "report": report}
        if is_chunk_tagset(self.labels):  # BIO / IOBES tags: whole entities count, as CoNLL scores them
            report["entities"] = entity_report(true, pred)
            out["entity_f1"] = report["entities"]["micro"]["f1"]
        return out


class QuestionAnswering(Classification):
    """Extractive QA: a start and an end over the context's tokens; exact match and F1 on validation."""

    def __init__(self, examples, val, val_rows, cfg, pad_id, tokenizer):
        super().__init__(examples, val, ["start", "end"],
                         dataclasses.replace(cfg, metric="accuracy", class_weights=False), pad_id, tokenizer)
        self.headline, self.val_rows = "f1", val_rows

    def _batch(self, ex: Examples, idx: list[int]) -> dict:
        return span_batch(ex, idx, self.pad_id)

    def loss(self, model, batch: dict) -> torch.Tensor:
        return span_loss(model, batch)[0]

    def evaluate(self, model, full: bool = False, autocast=None, examples=None) -> dict:
        ex, (contexts, offsets, answers) = examples or self.val, self.val_rows
        preds, loss = answer_spans(model, ex, contexts, offsets, self.pad_id)
        scores = qa_scores(preds, [[a] for a in answers])
        return {"loss": loss, "exact_match": scores["exact_match"], "f1": scores["f1"], "predictions": preds}


# ------------------------------------------------------------------------------------------ running


def _recipe(cfg: FinetuneConfig, model_cfg: ModelConfig, data: str, n_train: int) -> Recipe:
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    steps = max(1, round(cfg.epochs * steps_per_epoch))
    return Recipe(
        model=model_cfg.to_dict(),
        data=DataConfig(corpus=str(data), column=cfg.text_column, clean=False),
        train=TrainConfig(
            max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=0.0, schedule="linear",
            warmup_steps=max(1, round(cfg.warmup_fraction * steps)), weight_decay=cfg.weight_decay,
            eval_every=max(1, steps_per_epoch // cfg.evals_per_epoch), log_every=max(1, min(10, steps_per_epoch)),
            patience=cfg.patience, keep_best=True, seed=cfg.seed, device=cfg.device, dtype=cfg.dtype,
            progress=cfg.progress, grad_clip=1.0, compile=cfg.compile),
    )


def _task_model(base: torch.nn.Module, head: str, labels: list[str]) -> torch.nn.Module:
    cfg = dataclasses.replace(base.config, head=head, labels=labels)
    model = build_model(cfg)
    model.base.load_state_dict(base.state_dict())
    return model


def _encode(tokenizer, rows: dict, idx, cfg: FinetuneConfig, max_len: int, encoder: bool, label_ids=None):
    pick = lambda col: [rows[col][i] for i in idx]  # noqa: E731
    if cfg.task == "token":
        tags = [[label_ids[t] for t in ts] for ts in pick("tags")]
        return encode_tagged(tokenizer, pick("words"), tags, max_len, encoder, cfg.truncation, idx), None
    if cfg.task == "qa":
        return encode_qa(tokenizer, pick("question"), pick("context"), pick("answer"), max_len, cfg.truncation,
                         cfg.doc_stride, idx)
    ex = encode_texts(tokenizer, pick("text"), max_len, encoder, pick("pair") if "pair" in rows else None,
                      cfg.truncation, idx)
    ex.targets = [label_ids[rows["label"][i]] for i in idx]
    return ex, None


def train_and_test(base, tokenizer, rows: dict, split: tuple, cfg: FinetuneConfig, out: Path, data: str,
                   log=print, resume: bool = False, settings: dict | None = None) -> dict:
    """Fine-tune on split[0], keep the best on split[1], score split[2] once: the report (a dict).
    `settings` go to out/finetune.json once the inputs are checked, before training starts."""
    train_idx, val_idx, test_idx = split
    encoder = not base.config.causal
    max_len = row_length(base, cfg)
    labels = {"classify": lambda: label_names(rows["label"]),
              "token": lambda: label_names([t for ts in rows["tags"] for t in ts]), "qa": list}[cfg.task]()
    if cfg.metric == "entity_f1" and not is_chunk_tagset(labels):
        raise LmforgeError(f"--metric entity_f1 needs BIO or IOBES tags (B-PER, I-PER, O, ...), but the tags are "
                           f"{', '.join(labels[:5])}; use --metric accuracy or f1_macro")
    label_ids = {name: i for i, name in enumerate(labels)}
    parts = [_encode(tokenizer, rows, idx, cfg, max_len, encoder, label_ids) for idx in (train_idx, val_idx, test_idx)]
    cut = sum(p[0].truncated for p in parts)
    if cut:
        n = len(rows[next(iter(rows))])
        log(f"warning: {cut} of {n} rows have a question cut to half of {max_len} tokens or an answer no window holds "
            "whole (--truncation error refuses them instead)" if cfg.task == "qa" else
            f"warning: {cut} of {n} rows are longer than {max_len} tokens and were cut at the end (--truncation "
            "error refuses them instead)")
    pad = padding_id(tokenizer)
    torch.manual_seed(cfg.seed)  # the new head's initial weights: the same for the same seed, in any process
    model = _task_model(base, cfg.task, labels)
    if cfg.task == "token":
        task = TokenClassification(parts[0][0], parts[1][0], labels, cfg, pad, tokenizer)
    elif cfg.task == "qa":
        val_rows = ([rows["context"][i] for i in val_idx], parts[1][1], [rows["answer"][i] for i in val_idx])
        task = QuestionAnswering(parts[0][0], parts[1][0], val_rows, cfg, pad, tokenizer)
    else:
        task = Classification(parts[0][0], parts[1][0], labels, cfg, pad, tokenizer)
    recipe = _recipe(cfg, model.config, data, len(parts[0][0]))
    if settings is not None:
        write_json(out / "finetune.json", settings)  # before any checkpoint: a stopped run can be resumed
    trainer = Trainer(recipe, out, resume=resume, log=log, model=model, task=task,
                      diverged_fix="lower --lr (e.g. --lr 1e-5) and start again with another --out")
    result = trainer.fit()
    best, _ = load_checkpoint(out, trainer.device)  # the kept (best-on-validation) weights
    report: dict = {"task": cfg.task, "base_params": base.num_params(), "train_rows": len(train_idx),
                    "validation_rows": len(val_idx), "test_rows": len(test_idx), "truncated": cut, "steps": result.steps,
                    "best_validation": {k: v for k, v in (result.best or {}).items() if k != "report"},
                    "seconds": round(result.seconds, 1)}
    if cfg.task == "qa":
        task.val_rows = ([rows["context"][i] for i in test_idx], parts[2][1], [rows["answer"][i] for i in test_idx])
        test = task.evaluate(best, examples=parts[2][0])
        report["test"] = {k: v for k, v in test.items() if k != "predictions"}
    else:
        test = task.evaluate(best, examples=parts[2][0], autocast=trainer.autocast)
        report["test"] = test["report"]
        gold = (lambda idx: [rows["label"][i] for i in idx]) if cfg.task == "classify" else \
            (lambda idx: [t for i in idx for t in rows["tags"][i]])
        report["majority_baseline"] = majority_baseline(gold(train_idx), gold(test_idx))
    return report


def _settings(base_path, data, cfg: FinetuneConfig) -> dict:
    """What a fine-tuning run was started with (finetune.json); a resume must match it."""
    return {"base": str(base_path), "data": str(data), "config": dataclasses.asdict(cfg)}


def _check_resume(out: Path, settings: dict, resume: bool) -> None:
    if not resume:
        if is_checkpoint(out):
            raise LmforgeError(f"{out} already holds a checkpoint; pass --resume to continue that fine-tuning run, "
                               "or choose another --out")
        return
    try:
        saved = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict) or not is_checkpoint(out):
        raise LmforgeError(f"{out} holds no fine-tuning run to resume; run without --resume, or give the run with --out")
    mine, theirs = settings["config"], saved.get("config") if isinstance(saved.get("config"), dict) else {}
    diff = [(k, saved.get(k)) for k in ("base", "data") if settings[k] != saved.get(k)]
    diff += [(k, theirs.get(k)) for k in sorted(set(mine) | set(theirs)) if k != "progress" and mine.get(k) != theirs.get(k)]
    if diff:
        raise LmforgeError(f"{out} was fine-tuned with another {diff[0][0]} ({diff[0][1]!r}); resume with the same "
                           "settings, or choose another --out")


def finetune(base_path: str | Path, data: str, out: str | Path, cfg: FinetuneConfig, log=print,
             resume: bool = False) -> dict:
    """`lmforge finetune`: split, fine-tune, keep the best, score the test split; report.json beside the
    run. resume: continue a run that was stopped, from its last kept checkpoint, with its settings."""
    out = Path(out)
    settings = _settings(base_path, data, cfg)
    _check_resume(out, settings, resume)
    base, tokenizer = load_base(base_path)
    rows = read_rows(data, cfg)
    key = rows["label"] if cfg.task == "classify" else ["all"] * len(next(iter(rows.values())))  # unstratified
    if cfg.task == "classify":
        label_names(rows["label"])
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    split = stratified_split(key, fractions, seed=cfg.seed)
    report = train_and_test(base, tokenizer, rows, split, cfg, out, data, log, resume, settings)
    report.update(base=str(base_path), data=str(data), config=dataclasses.asdict(cfg))
    if cfg.task != "qa":
        plot_confusion_matrix(report["test"], out / "confusion.png", title=f"{Path(data).name}: test split")
    write_json(out / "report.json", report)
    return report


def cross_validate(base_path: str | Path, data: str, out: str | Path, cfg: FinetuneConfig, folds: int = 5,
                   log=print) -> dict:
    """`lmforge cv`: k folds (stratified by label for classify); each is the test split once, while the
    other k - 1 train (a validation part of them picks the epoch). Mean and standard deviation over
    the folds of the task's test figures: accuracy and macro F1 (token: also entity F1 for BIO
    tags), or exact match and F1 (qa). An `out` that holds a cross-validation already is refused."""
    if folds < 2:
        raise LmforgeError(f"--folds {folds} cannot cross-validate; use 2 or more (5 is usual)")
    out = Path(out)
    if (out / "cv.json").exists() or any(is_checkpoint(fold) for fold in out.glob("fold-*")):
        raise LmforgeError(f"{out} already holds a cross-validation, which this one would overwrite; choose another "
                           "--out, or remove that one first")
    base, tokenizer = load_base(base_path)
    rows = read_rows(data, cfg)
    key = rows["label"] if cfg.task == "classify" else ["all"] * len(next(iter(rows.values())))
    if cfg.task == "classify":
        label_names(rows["label"])
    per_fold = []
    for k, (train_all, test_idx) in enumerate(stratified_kfold(key, folds, seed=cfg.seed)):
        sub = [key[i] for i in train_all]
        val_share = cfg.val_fraction / (1 - 1 / folds)
        tr, va = stratified_split(sub, (1 - val_share, val_share), seed=cfg.seed + k)
        log(f"fold {k + 1}/{folds}: {len(tr)} train, {len(va)} validation, {len(test_idx)} test")
        report = train_and_test(base, tokenizer, rows, (train_all[tr], train_all[va], test_idx), cfg,
                                out / f"fold-{k + 1}", data, log)
        write_json(out / f"fold-{k + 1}" / "report.json", report)
        test = report["test"]
        if cfg.task == "qa":
            per_fold.append({"exact_match": test["exact_match"], "f1": test["f1"]})
        else:
            entities = {"entity_f1": test["entities"]["micro"]["f1"]} if "entities" in test else {}
            per_fold.append({"accuracy": test["accuracy"], "f1_macro": test["macro"]["f1"], **entities})
    summary = {"folds": folds, "base": str(base_path), "data": str(data), **summarize_folds(per_fold)}
    write_json(out / "cv.json", summary)
    return summary
