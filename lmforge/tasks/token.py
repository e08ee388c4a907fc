"""Token classification (tagging, e.g. named entities): a tag per word, carried by the word's first
token; cross-entropy over those tokens. Scored per word (accuracy, macro F1) and, for BIO / IOBES
tags, per whole entity as CoNLL scores it (entity F1).

    rows:     a .jsonl file, one sentence a line: {"tokens": [words], "tags": [one per word]}
    predict:  {"tokens", "tags"[, "entities"]} per line
"""

from __future__ import annotations

import contextlib

import torch

from lmforge.data.labelled import Examples, encode_tagged, read_tagged
from lmforge.errors import LmforgeError
from lmforge.evaluate.classification import classification_report
from lmforge.evaluate.entities import entity_report, entity_spans, is_chunk_tagset
from lmforge.data import IGNORE
from lmforge.objectives.classify import sequence_loss
from lmforge.tasks.base import chunks, in_row_order, inference, label_names, plain_batch
from lmforge.tasks.classify import Classification


def token_batch(ex: Examples, idx: list[int], pad_id: int) -> dict:
    batch = plain_batch(ex, idx, pad_id)
    labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
    for j, i in enumerate(idx):
        labels[j, :len(ex.targets[i])] = torch.tensor(ex.targets[i])
    batch["labels"] = labels
    return batch


def tag_words(model, ex: Examples, pad_id: int, autocast=None,
              batch_size: int = 64) -> tuple[list[list[int]], list[list[int]], float]:
    """Per row, the predicted tag id of every scored word (the tokens whose target is not IGNORE: a
    word's first piece), the target ids there, and the mean loss over the targets."""
    pred, true, loss_sum, batches = [], [], 0.0, chunks(ex, batch_size)
    with inference(model) as device:
        for idx in batches:
            batch = {k: v.to(device) for k, v in token_batch(ex, idx, pad_id).items()}
            with (autocast or contextlib.nullcontext)():
                loss, logits = sequence_loss(model, batch)
            loss_sum += loss.item() * len(idx)
            scored, guess = batch["labels"] != IGNORE, logits.argmax(-1)
            for j in range(len(idx)):
                true.append(batch["labels"][j][scored[j]].tolist())
                pred.append(guess[j][scored[j]].tolist())
    return in_row_order(pred, batches), in_row_order(true, batches), loss_sum / max(1, len(ex))


def tag_report(true: list[list[str]], pred: list[list[str]], labels: list[str]) -> dict:
    """The word-level report, with the entity-level one under "entities" when the tags mark entities."""
    report = classification_report([t for row in true for t in row], [t for row in pred for t in row], labels)
    if is_chunk_tagset(labels):  # BIO / IOBES tags: whole entities count, as CoNLL scores them
        report["entities"] = entity_report(true, pred)
    return report


class TokenClassification(Classification):
    """A tag per word (on its first token): cross-entropy over tagged tokens; the report over words."""

    kind = "token"

    @staticmethod
    def read(path: str, cfg) -> dict[str, list]:
        words, tags = read_tagged(path, cfg.tokens_column, cfg.tags_column)
        return {"words": words, "tags": tags}

    @staticmethod
    def classes(rows: dict) -> list[str]:
        return label_names([t for ts in rows["tags"] for t in ts])

    def stratify_by(self) -> list:
        return ["all"] * len(self.rows["words"])

    def check(self) -> None:
        if self.cfg.metric == "entity_f1" and not is_chunk_tagset(self.labels):
            raise LmforgeError(f"{{setting}} needs BIO or IOBES tags (B-PER, I-PER, O, ...), but the tags are "
                               f"{', '.join(self.labels[:5])}; use accuracy or f1_macro", "task.metric", "entity_f1")

    def encode(self, idx, tokenizer) -> tuple[Examples, list[int], None]:
        words = [self.rows["words"][i] for i in idx]
        tags = [[self.label_ids[t] for t in self.rows["tags"][i]] for i in idx]
        return encode_tagged(tokenizer, words, tags, self.max_len, self.encoder, self.cfg.truncation, idx), list(idx), None

    def batch(self, ex: Examples, idx: list[int]) -> dict:
        return token_batch(ex, idx, self.pad_id)

    def score(self, model, part: tuple, autocast=None) -> dict:
        pred, true, loss = tag_words(model, part[0], self.pad_id, autocast)
        report = tag_report([[self.labels[t] for t in row] for row in true],
                            [[self.labels[t] for t in row] for row in pred], self.labels)
        out = {"loss": loss, "accuracy": report["accuracy"], "f1_macro": report["macro"]["f1"], "report": report}
        if "entities" in report:
            out["entity_f1"] = report["entities"]["micro"]["f1"]
        return out

    def gold(self, idx) -> list[str]:
        return [t for i in idx for t in self.rows["tags"][i]]

    @staticmethod
    def predict(model, tokenizer, path: str, cfg, max_len: int, pad_id: int, log) -> tuple[list[dict], dict | None]:
        labels = model.config.labels
        words, gold = read_tagged(path, cfg.tokens_column, cfg.tags_column, need_tags=False)
        ids = {t: i for i, t in enumerate(labels)}
        if gold is not None and any(t not in ids for row in gold for t in row):
            unknown = next(t for row in gold for t in row if t not in ids)
            raise LmforgeError(f"tag {unknown!r} in {path} is not one the run was trained on ({', '.join(labels[:8])}); "
                               "fix the file or drop its tags to predict only")
        ex = encode_tagged(tokenizer, words, [[0] * len(w) for w in words], max_len, not model.config.causal,
                           cfg.truncation)
        if ex.truncated:
            log(f"warning: {ex.truncated} rows are longer than {max_len} tokens; their last words get no tag (null)")
        pred, _, _ = tag_words(model, ex, pad_id)
        tags = [[None] * len(w) for w in words]  # a word cut away (or with no token of its own) gets no tag
        for row, at, p in zip(tags, ex.words, pred):
            for word, t in zip(at, p):
                row[word] = labels[t]
        lines = [_line(w, t, is_chunk_tagset(labels)) for w, t in zip(words, tags)]
        if gold is None:
            return lines, None
        scored = [([g[w] for w in at], [labels[x] for x in p]) for g, at, p in zip(gold, ex.words, pred)]
        return lines, tag_report([g for g, _ in scored], [p for _, p in scored], labels)


def _line(words: list[str], tags: list, chunks_: bool) -> dict:
    line = {"tokens": words, "tags": tags}
    if chunks_:
        spans = sorted(entity_spans([x or "O" for x in tags]), key=lambda e: e[1])
        line["entities"] = [{"type": ty, "start": a, "end": b, "text": " ".join(words[a:b + 1])} for ty, a, b in spans]
    return line
