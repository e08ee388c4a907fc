"""What every labelled task shares: reading columns, the classes, batching, running a model.

A labelled task (classify.py, token.py, qa.py) gives the training loop (train/trainer.py) the same
five things as a pretraining task: `next_batch()`, `loss(model, batch)`, `evaluate(model, full,
autocast)` (a dict with "loss" and the task's metrics), its `headline` metric (what early stopping
watches and the kept checkpoint maximises) and `state_dict()` for the data position. Besides, it
reads its rows from a file (`read`), encodes a split of them (`encode`), scores the test split
(`test`) and predicts for new rows (`predict`), so fine-tuning, cross-validation and `lmforge
predict` are thin loops over a task.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import torch

from lmforge.config import TaskConfig, TrainConfig
from lmforge.data.corpora import load_corpus
from lmforge.data.labelled import COLUMNAR, Examples, ShuffledBatches, by_length, pad_batch
from lmforge.errors import LmforgeError
from lmforge.tokenizer import Tokenizer


def padding_id(tokenizer) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its end-of-text (GPT-style vocabularies)."""
    return tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_id or 0)


def read_columns(path: str, columns: dict[str, str]) -> dict[str, list[str]]:
    """{name: column} of a rows file -> {name: its cells}; the first two columns are read together.
    A missing column is an error about the task key that names it (`columns` maps the task.* key's
    name to its column: {"text_column": "review", ...})."""
    if Path(path).is_file() and Path(path).suffix.lower() not in COLUMNAR:
        raise LmforgeError(f"{path} is not a file of rows with named columns; give the labelled rows as a .csv, .tsv "
                           "or .jsonl file")
    keys = list(columns)
    out: dict[str, list[str]] = {}
    for i in range(0, len(keys), 2):
        pair = keys[i:i + 2]
        asked = {"column": pair[0], "label_column": pair[1] if len(pair) > 1 else None}
        try:
            corpus = load_corpus(path, column=columns[pair[0]], label_column=columns.get(asked["label_column"]))
        except LmforgeError as e:
            if e.field in asked and asked[e.field]:  # load_corpus's argument -> the task key that set it
                raise e.about(f"task.{asked[e.field]}") from None
            raise
        out[pair[0]] = corpus.documents
        if len(pair) > 1:
            out[pair[1]] = corpus.labels
    if not out[keys[0]]:
        raise LmforgeError(f"{path} has no rows; give a file with a header and at least one row per class")
    return out


def label_names(labels: list[str]) -> list[str]:
    """The classes in sorted order; an empty label or a single class is an error."""
    if any(not str(label).strip() for label in labels):
        row = next(i for i, label in enumerate(labels) if not str(label).strip())
        raise LmforgeError(f"row {row + 1} has an empty label; give every row a label or drop it")
    names = sorted(set(labels))
    if len(names) < 2:
        raise LmforgeError(f"the label column has a single class ({names[0]!r}); classification needs at least "
                           "two classes: check the label column and the file")
    return names


@contextlib.contextmanager
def inference(model):
    """Eval mode without gradients, the mode put back after; yields the model's device."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def chunks(ex: Examples, size: int) -> list[list[int]]:
    """Evaluation batches of rows of similar length (less padding); `in_row_order` puts results back."""
    return by_length([len(r) for r in ex.ids], size)


def in_row_order(items: list, batches: list[list[int]]) -> list:
    """Per-row results produced in the order of `batches`, put back in row order."""
    out = [None] * len(items)
    for item, i in zip(items, (i for idx in batches for i in idx)):
        out[i] = item
    return out


def plain_batch(ex: Examples, idx: list[int], pad_id: int) -> dict:
    return pad_batch([ex.ids[i] for i in idx], [ex.types[i] for i in idx], pad_id)


class LabelledTask:
    """The shared half of a labelled task: seeded shuffled batches over the training examples, the
    data position, and the settings. Subclasses give `batch`, `loss`, `evaluate` and the rest."""

    kind = ""
    higher_is_better = True

    def __init__(self, cfg: TaskConfig, train: TrainConfig, tokenizer: Tokenizer, labels: list[str],
                 rows: dict, encoder: bool, max_len: int):
        self.cfg, self.train_cfg, self.labels, self.rows = cfg, train, labels, rows
        self.encoder, self.max_len, self.pad_id = encoder, max_len, padding_id(tokenizer)
        self.data = SimpleNamespace(tokenizer=tokenizer)  # what the trainer saves beside the weights
        self.label_ids = {name: i for i, name in enumerate(labels)}
        self.headline = cfg.metric
        self.examples = self.val = None
        self.val_idx: list[int] = []
        self.val_offsets = None

    def fit_on(self, train: tuple, val: tuple) -> None:
        """Train on the encoded split `train`, validate on `val` (each: examples, row indices, offsets)."""
        self.examples, self.val, self.val_idx, self.val_offsets = train[0], val[0], val[1], val[2]
        self.batches = ShuffledBatches(len(self.examples), self.train_cfg.batch_size, self.train_cfg.seed,
                                       [len(r) for r in self.examples.ids])  # rows of similar length together

    def next_batch(self) -> dict:
        return self.batch(self.examples, self.batches.next_indices())

    def evaluate(self, model, full: bool = False, autocast=None) -> dict:
        return self.score(model, (self.val, self.val_idx, self.val_offsets), autocast)

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)

    def stratify_by(self) -> list:
        """What the split keeps in proportion: the label for classification, nothing otherwise."""
        return ["all"] * len(next(iter(self.rows.values())))

    def truncation_note(self, cut: int, n: int) -> str:
        return (f"warning: {cut} of {n} rows are longer than {self.max_len} tokens and were cut at the end "
                "(--truncation error refuses them instead)")
