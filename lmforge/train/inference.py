"""Running a fine-tuned model over encoded rows: class probabilities, word tags, answer spans.

Validation during fine-tuning and `lmforge predict` share these, so a prediction is made the same
way in both. Each runs the model in eval mode without gradients, in batches, and puts the mode back.
"""

from __future__ import annotations

import contextlib

import torch

from lmforge.data.labelled import Examples, by_length, pad_batch
from lmforge.evaluate.qa import best_span
from lmforge.objectives.classify import sequence_loss, span_loss

IGNORE = -100  # the target of a token that is not scored (a word's later pieces, specials, padding)


def padding_id(tokenizer) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its end-of-text (GPT-style vocabularies)."""
    return tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_id or 0)


def class_batch(ex: Examples, idx: list[int], pad_id: int) -> dict:
    batch = pad_batch([ex.ids[i] for i in idx], [ex.types[i] for i in idx], pad_id)
    batch["labels"] = torch.tensor([ex.targets[i] for i in idx], dtype=torch.long)
    return batch


def token_batch(ex: Examples, idx: list[int], pad_id: int) -> dict:
    batch = pad_batch([ex.ids[i] for i in idx], [ex.types[i] for i in idx], pad_id)
    labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
    for j, i in enumerate(idx):
        labels[j, :len(ex.targets[i])] = torch.tensor(ex.targets[i])
    batch["labels"] = labels
    return batch


def span_batch(ex: Examples, idx: list[int], pad_id: int) -> dict:
    batch = pad_batch([ex.ids[i] for i in idx], [ex.types[i] for i in idx], pad_id)
    batch["start_positions"] = torch.tensor([ex.targets[i][0] for i in idx], dtype=torch.long)
    batch["end_positions"] = torch.tensor([ex.targets[i][1] for i in idx], dtype=torch.long)
    return batch


@contextlib.contextmanager
def _inference(model):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def _chunks(ex: Examples, size: int) -> list[list[int]]:
    """Batches of rows of similar length (less padding); results are put back in row order."""
    return by_length([len(r) for r in ex.ids], size)


def _in_row_order(items: list, chunks: list[list[int]]) -> list:
    """Per-row results produced in the order of `chunks`, put back in row order."""
    out = [None] * len(items)
    for item, i in zip(items, (i for idx in chunks for i in idx)):
        out[i] = item
    return out


def predict_probs(model, ex: Examples, pad_id: int, autocast=None, batch_size: int = 64) -> tuple[torch.Tensor, float]:
    """Class probabilities (N, C) for every example, and the mean loss when targets are known."""
    probs, loss_sum, chunks = [], 0.0, _chunks(ex, batch_size)
    with _inference(model) as device:
        for idx in chunks:
            batch = class_batch(ex, idx, pad_id) if ex.targets else pad_batch(
                [ex.ids[i] for i in idx], [ex.types[i] for i in idx], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with (autocast or contextlib.nullcontext)():
                if ex.targets:
                    loss, logits = sequence_loss(model, batch)
                    loss_sum += loss.item() * len(idx)
                else:
                    logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
            probs.append(torch.softmax(logits.float(), -1).cpu())
    rows = [i for idx in chunks for i in idx]
    return torch.cat(probs)[torch.tensor(rows).argsort()], loss_sum / max(1, len(ex))


def tag_words(model, ex: Examples, pad_id: int, autocast=None,
              batch_size: int = 64) -> tuple[list[list[int]], list[list[int]], float]:
    """Per row, the predicted tag id of every scored word (the tokens whose target is not IGNORE: a
    word's first piece), the target ids there, and the mean loss over the targets."""
    pred, true, loss_sum, chunks = [], [], 0.0, _chunks(ex, batch_size)
    with _inference(model) as device:
        for idx in chunks:
            batch = {k: v.to(device) for k, v in token_batch(ex, idx, pad_id).items()}
            with (autocast or contextlib.nullcontext)():
                loss, logits = sequence_loss(model, batch)
            loss_sum += loss.item() * len(idx)
            scored, guess = batch["labels"] != IGNORE, logits.argmax(-1)
            for j in range(len(idx)):
                true.append(batch["labels"][j][scored[j]].tolist())
                pred.append(guess[j][scored[j]].tolist())
    return _in_row_order(pred, chunks), _in_row_order(true, chunks), loss_sum / max(1, len(ex))


def answer_spans(model, ex: Examples, contexts: list[str], offsets: list[list[tuple[int, int]]], pad_id: int,
                 batch_size: int = 64) -> tuple[list[str], float]:
    """The answer text of every row: the best-scoring span (start logit + end logit) over the context
    tokens of all its windows (`ex.rows` maps a window to its row; `offsets` are each window's
    character spans), and the mean span loss over the windows' targets."""
    best: dict[int, tuple[float, str]] = {}  # row -> (score, text)
    loss_sum = 0.0
    with _inference(model) as device:
        for idx in _chunks(ex, batch_size):
            batch = {k: v.to(device) for k, v in span_batch(ex, idx, pad_id).items()}
            loss, logits = span_loss(model, batch)
            loss_sum += loss.item() * len(idx)
            allowed = batch["token_type_ids"].bool() & batch["attention_mask"]
            allowed[torch.arange(len(idx)), batch["attention_mask"].sum(1) - 1] = False  # the last [SEP]
            start, end = best_span(logits[..., 0], logits[..., 1], allowed=allowed)
            at = torch.arange(len(idx), device=device)
            score = (logits[at, start, 0] + logits[at, end, 1]).tolist()
            for j, i in enumerate(idx):
                first = ex.types[i].index(1)  # the first context token
                a, b = int(start[j]) - first, int(end[j]) - first
                spans, row = offsets[i], ex.rows[i] if ex.rows else i
                text = contexts[row][spans[a][0]:spans[b][1]] if 0 <= a <= b < len(spans) else ""
                if row not in best or score[j] > best[row][0]:
                    best[row] = (score[j], text)
    return [best[r][1] if r in best else "" for r in range(len(contexts))], loss_sum / max(1, len(ex))
