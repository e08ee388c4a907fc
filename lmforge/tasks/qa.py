"""Extractive question answering: [CLS] question [SEP] context [SEP]; the model scores every context
token as the answer's start and as its end, L = (CE(start) + CE(end)) / 2. A context longer than a
row is read in overlapping windows; a row's answer is the best span (start + end logit) over all
its windows. Scored by exact match and token F1 (SQuAD's figures).

    rows:     question, context and answer columns (the answer copied from the context)
    predict:  {"question", "answer"} per row
"""

from __future__ import annotations

import torch

from lmforge.data.labelled import Examples, answer_span, encode_qa
from lmforge.evaluate.qa import best_span, qa_scores
from lmforge.objectives.classify import span_loss
from lmforge.tasks.base import LabelledTask, chunks, inference, plain_batch, read_columns
from lmforge.tasks.classify import column


def span_batch(ex: Examples, idx: list[int], pad_id: int) -> dict:
    batch = plain_batch(ex, idx, pad_id)
    batch["start_positions"] = torch.tensor([ex.targets[i][0] for i in idx], dtype=torch.long)
    batch["end_positions"] = torch.tensor([ex.targets[i][1] for i in idx], dtype=torch.long)
    return batch


def answer_spans(model, ex: Examples, contexts: list[str], offsets: list[list[tuple[int, int]]], pad_id: int,
                 batch_size: int = 64) -> tuple[list[str], float]:
    """The answer text of every row: the best-scoring span (start logit + end logit) over the context
    tokens of all its windows (`ex.rows` maps a window to its row; `offsets` are each window's
    character spans), and the mean span loss over the windows' targets."""
    best: dict[int, tuple[float, str]] = {}  # row -> (score, text)
    loss_sum = 0.0
    with inference(model) as device:
        for idx in chunks(ex, batch_size):
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


class QuestionAnswering(LabelledTask):
    """Extractive QA: a start and an end over the context's tokens; exact match and F1 on validation."""

    kind = "qa"

    def __init__(self, cfg, train, tokenizer, labels, rows, encoder, max_len):
        super().__init__(cfg, train, tokenizer, labels, rows, encoder, max_len)
        self.headline = "f1"  # what a reader is judged by, whatever task.metric says

    @staticmethod
    def read(path: str, cfg) -> dict[str, list[str]]:
        rows = read_columns(path, {"question_column": cfg.question_column, "context_column": cfg.context_column,
                                   "answer_column": cfg.answer_column})
        for i, (context, answer) in enumerate(zip(rows["context_column"], rows["answer_column"])):
            answer_span(context, answer, i)  # every answer must be a span of its context: checked before any work
        return rows

    @staticmethod
    def classes(rows: dict) -> list[str]:
        return []

    def truncation_note(self, cut: int, n: int) -> str:
        return (f"warning: {cut} of {n} rows have a question cut to half of {self.max_len} tokens or an answer no "
                "window holds whole (--truncation error refuses them instead)")

    def encode(self, idx, tokenizer) -> tuple[Examples, list[int], list]:
        pick = lambda col: [self.rows[col][i] for i in idx]  # noqa: E731
        ex, offsets = encode_qa(tokenizer, pick("question_column"), pick("context_column"), pick("answer_column"),
                                self.max_len, self.cfg.truncation, self.cfg.doc_stride, idx)
        return ex, list(idx), offsets

    def batch(self, ex: Examples, idx: list[int]) -> dict:
        return span_batch(ex, idx, self.pad_id)

    def loss(self, model, batch: dict) -> torch.Tensor:
        return span_loss(model, batch)[0]

    def score(self, model, part: tuple, autocast=None) -> dict:
        ex, idx, offsets = part
        contexts = [self.rows["context_column"][i] for i in idx]
        preds, loss = answer_spans(model, ex, contexts, offsets, self.pad_id)
        scores = qa_scores(preds, [[self.rows["answer_column"][i]] for i in idx])
        return {"loss": loss, "exact_match": scores["exact_match"], "f1": scores["f1"], "predictions": preds}

    def test(self, model, part: tuple, train_idx, autocast=None) -> dict:
        return {"test": {k: v for k, v in self.score(model, part).items() if k != "predictions"}}

    @staticmethod
    def fold_scores(test: dict) -> dict:
        return {"exact_match": test["exact_match"], "f1": test["f1"]}

    @staticmethod
    def predict(model, tokenizer, path: str, cfg, max_len: int, pad_id: int, log) -> tuple[list[dict], dict | None]:
        questions, contexts = column(path, cfg.question_column), column(path, cfg.context_column)
        gold = column(path, cfg.answer_column, required=False)
        if gold is not None:
            for i, (c, a) in enumerate(zip(contexts, gold)):
                answer_span(c, a, i)
        ex, offsets = encode_qa(tokenizer, questions, contexts, gold, max_len, cfg.truncation, cfg.doc_stride)
        if ex.truncated:
            log(f"warning: {ex.truncated} rows have a question cut to half the row or an answer no window holds whole")
        answers, _ = answer_spans(model, ex, contexts, offsets, pad_id)
        lines = [{"question": q, "answer": a} for q, a in zip(questions, answers)]
        return lines, (qa_scores(answers, [[g] for g in gold]) if gold is not None else None)
