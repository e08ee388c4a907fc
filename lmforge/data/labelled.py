"""Labelled examples for fine-tuning: rows of a file -> token ids, segment ids and targets.

    encoder, one text:  [CLS] a [SEP]                 token types 0 ... 0
    tagged words:       [CLS] w1 w2 ... [SEP]         a word's tag on its first token, -100 on the rest
    encoder, a pair:    [CLS] a [SEP] b [SEP]         token types 0 ... 0 1 ... 1
    decoder (GPT):      a [EOS]                       the last token's state sees the whole text
    QA (encoder):       [CLS] question [SEP] context [SEP], target = the answer's first and last token

Text longer than the context is cut at its end (a pair: the longer side first), and the caller is
told how many rows were cut; `truncation="error"` makes that an error instead. Batches are padded
on the right to their longest row only (dynamic padding), so short texts cost little.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.data import IGNORE
from lmforge.errors import LmforgeError
from lmforge.tokenizer import Tokenizer


COLUMNAR = (".csv", ".tsv", ".jsonl")  # files of rows with named columns; any other file is one document


@dataclass
class Examples:
    """Tokenised rows: ids and token types per row, and one target per row (or per token / a span)."""

    ids: list[list[int]]
    types: list[list[int]]
    targets: list = field(default_factory=list)  # class index, or (start, end) token positions for QA
    truncated: int = 0  # rows cut to fit the context
    rows: list[int] = field(default_factory=list)  # QA: the row each window of a long context comes from
    words: list[list[int]] = field(default_factory=list)  # tagging: per row, the word of each scored token

    def __len__(self) -> int:
        return len(self.ids)


def least_length(pair: bool, encoder: bool = True) -> int:
    """The shortest row that holds one token of each text with its special tokens: [CLS] a [SEP]
    (3), [CLS] a [SEP] b [SEP] or [CLS] question [SEP] context [SEP] (5), a [EOS] (2), a [EOS] b [EOS] (4)."""
    return (2 + encoder) if not pair else (4 + encoder)


def check_length(max_len: int, least: int) -> None:
    """Refuse a row length too short to hold any row with its special tokens."""
    if max_len < least:
        raise LmforgeError(f"{{setting}} is too short to hold a row with its special tokens; give {least} or more, "
                           "or leave it out to use the model's context", "max_length", max_len)


def _row(i: int, numbers) -> int:
    """The 1-based number, in its file, of the i-th row given (`numbers`: each row's 0-based index
    in the file, when the rows are a part of it such as a training split)."""
    return int(numbers[i] if numbers is not None else i) + 1


def _fit_pair(a: list[int], b: list[int], room: int) -> tuple[list[int], list[int]]:
    """Cut the longer of a and b one token at a time until both fit in `room` (BERT's rule)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > room:
        (a if len(a) >= len(b) else b).pop()
    return a, b


def encode_texts(tokenizer: Tokenizer, texts: list[str], max_len: int, encoder: bool = True,
                 pairs: list[str] | None = None, truncation: str = "warn", numbers=None) -> Examples:
    """Token ids (with the family's special tokens) of each text, or text pair, cut to `max_len`.
    `numbers`: each row's index in its file, so that an error names the file's row."""
    if truncation not in ("warn", "error"):
        raise LmforgeError("{setting} is not supported; use warn or error", "truncation", truncation)
    check_length(max_len, least_length(pairs is not None, encoder))
    if encoder and (tokenizer.cls_id is None or tokenizer.sep_id is None):
        raise LmforgeError("the tokenizer has no [CLS]/[SEP] token, which an encoder's input needs; use the "
                           "tokenizer the model was trained with")
    first = tokenizer.encode_batch(texts)
    second = tokenizer.encode_batch(pairs) if pairs is not None else None
    out = Examples([], [])
    for i, a in enumerate(first):
        b = second[i] if second is not None else None
        if encoder:
            room = max_len - (3 if b is not None else 2)
            fa, fb = _fit_pair(a, b or [], room)
            ids = [tokenizer.cls_id] + fa + [tokenizer.sep_id]
            types = [0] * len(ids)
            if b is not None:
                ids += fb + [tokenizer.sep_id]
                types += [1] * (len(fb) + 1)
            cut = len(fa) < len(a) or (b is not None and len(fb) < len(b))
        else:
            eos = tokenizer.eos_id
            joined = a + ([eos] + b if b is not None else [])
            ids = joined[:max_len - 1] + [eos]
            types = [0] * len(ids)
            cut = len(joined) > max_len - 1
        if cut:
            if truncation == "error":
                raise LmforgeError(f"row {_row(i, numbers)} is {len(a) + len(b or [])} tokens, longer than the model's context "
                                   f"of {max_len}; shorten it or allow truncation (--truncation warn)")
            out.truncated += 1
        out.ids.append(ids)
        out.types.append(types)
    return out


def answer_span(context: str, answer: str, row: int) -> tuple[int, int]:
    """Character span of the answer's first occurrence in its context; an error when it has none."""
    start = context.find(answer) if answer else -1
    if start < 0:
        raise LmforgeError(f"row {row + 1}: the answer {answer[:40]!r} does not occur in its context; fix the row "
                           "(answers are copied from the context, character for character)")
    return start, start + len(answer)


def encode_qa(tokenizer: Tokenizer, questions: list[str], contexts: list[str], answers: list[str] | None,
              max_len: int, truncation: str = "warn", stride: int | None = None, numbers=None
              ) -> tuple[Examples, list[list[tuple[int, int]]]]:
    """[CLS] question [SEP] context window [SEP], one example per window, with the answer's token
    span in that window as the target.

    A context longer than fits is read in overlapping windows (a sliding window): each holds
    W = max_len - 3 - len(question) context tokens and starts W - stride tokens after the one
    before (stride: the overlap, default W // 4, at most W // 2), so an answer of up to stride + 1
    tokens cut by one window's edge lies whole in the next. A window that does not hold the whole
    answer has the target (0, 0), [CLS]: "no answer here". `rows` maps each window to its row. The
    answer must occur in its context (its first occurrence is taken). A row is counted as truncated
    (or, with truncation="error", refused) when its question is longer than half the room and is
    cut, or when no window holds its whole answer. Also returns each window's context tokens'
    character spans, to turn a predicted span back into text. Without answers (to be predicted),
    every target is (0, 0). `numbers`: as for encode_texts.
    """
    check_length(max_len, least_length(True))  # room for a question token and a context token: the windows always move on
    out = Examples([], [])
    offsets_per_window = []
    room = max_len - 3
    for i, (q, c) in enumerate(zip(questions, contexts)):
        start_char, end_char = answer_span(c, answers[i], _row(i, numbers) - 1) if answers is not None else (0, 0)
        q_ids = tokenizer.encode(q)
        c_ids, offsets = tokenizer.encode_offsets(c)
        fq = q_ids if len(q_ids) + len(c_ids) <= room or len(q_ids) <= room // 2 else q_ids[:room // 2]
        if len(fq) < len(q_ids):
            if truncation == "error":
                raise LmforgeError(f"row {_row(i, numbers)}: the question is longer than half of the {max_len} tokens a row may "
                                   "have; shorten it or allow truncation (--truncation warn)")
            out.truncated += 1
        width = room - len(fq)
        step = width - min(width // 4 if stride is None else stride, width // 2)
        held = answers is None
        inside = [j for j, (s, e) in enumerate(offsets) if s < end_char and e > start_char]  # the answer's tokens
        base = len(fq) + 2  # position of the first context token
        start = 0
        while True:
            piece = c_ids[start:start + width]
            holds = bool(inside) and start <= inside[0] and inside[-1] < start + len(piece)
            held |= holds
            out.ids.append([tokenizer.cls_id] + fq + [tokenizer.sep_id] + piece + [tokenizer.sep_id])
            out.types.append([0] * (len(fq) + 2) + [1] * (len(piece) + 1))
            out.targets.append((base + inside[0] - start, base + inside[-1] - start) if holds else (0, 0))
            out.rows.append(i)
            offsets_per_window.append(offsets[start:start + len(piece)])
            if start + width >= len(c_ids):
                break
            start += step
        if not held and len(fq) == len(q_ids):  # (a row whose question was cut is counted already)
            if truncation == "error":
                raise LmforgeError(f"row {_row(i, numbers)}: no window of {width} passage tokens holds the whole answer; raise "
                                   "--doc-stride (windows share up to half their tokens) or --max-length, or allow "
                                   "truncation (--truncation warn)")
            out.truncated += 1
    return out, offsets_per_window


def json_lines(path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line of a .jsonl file; one sentence for a file that is
    not UTF-8 text or a line that is not JSON."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LmforgeError(f"cannot read {path} as UTF-8 text ({e}); check the path and its encoding") from None
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                raise LmforgeError(f"{path}:{i} is not valid JSON ({e.msg}); fix or remove that line") from None


def read_tagged(path: str, tokens_key: str = "tokens", tags_key: str = "tags",
                need_tags: bool = True) -> tuple[list[list[str]], list[list[str]] | None]:
    """Words and their tags from a .jsonl file, one sentence a line: {"tokens": [...], "tags": [...]}.
    With need_tags=False, a file whose lines have no tags gives None for them (words to be tagged)."""
    if not str(path).endswith(".jsonl"):
        raise LmforgeError(f"token classification reads a .jsonl file with '{tokens_key}' and '{tags_key}' lists "
                           f"per line; {path} is not one")
    words, tags = [], []
    for i, row in json_lines(path):
        w, t = (row.get(tokens_key), row.get(tags_key)) if isinstance(row, dict) else (None, None)
        if not need_tags and t is None and isinstance(w, list) and w:
            words.append([str(x) for x in w])
            continue
        if not isinstance(w, list) or not isinstance(t, list) or len(w) != len(t) or not w:
            raise LmforgeError(f"{path}:{i} needs '{tokens_key}' and '{tags_key}': two non-empty lists of the same "
                               "length (one tag per word)")
        words.append([str(x) for x in w])
        tags.append([str(x) for x in t])
    if not words:
        raise LmforgeError(f"{path} has no rows; give one JSON object per line")
    if tags and len(tags) != len(words):
        raise LmforgeError(f"{path}: some lines have '{tags_key}' and some do not; give tags on every line or on none")
    return words, (tags or None)


def encode_tagged(tokenizer: Tokenizer, words: list[list[str]], tags: list[list[int]], max_len: int,
                  encoder: bool = True, truncation: str = "warn", numbers=None) -> Examples:
    """The words joined by spaces and tokenised; each word's tag sits on its first token (the
    other pieces of the word get -100, so every word is scored once), mapped by character offsets.
    `numbers`: as for encode_texts."""
    check_length(max_len, least_length(False, encoder))
    out = Examples([], [])
    room = max_len - (2 if encoder else 0)
    for i, (ws, ts) in enumerate(zip(words, tags)):
        starts, pos = [], 0
        for w in ws:
            starts.append(pos)
            pos += len(w) + 1
        ids, offsets = tokenizer.encode_offsets(" ".join(ws))
        labels, word, scored = [], 0, []
        for s, e in offsets:
            while word + 1 < len(starts) and e > starts[word + 1]:  # this token reaches into the next word
                word += 1
            first = s <= starts[word] < e  # the piece holding the word's first character
            labels.append(ts[word] if first else IGNORE)
            scored += [word] if first else []
        if len(ids) > room:
            if truncation == "error":
                raise LmforgeError(f"row {_row(i, numbers)} is {len(ids)} tokens, longer than the model's context of {max_len}; "
                                   "shorten it or allow truncation (--truncation warn)")
            out.truncated += 1
            ids, labels = ids[:room], labels[:room]
            scored = scored[:sum(t != IGNORE for t in labels)]
        out.words.append(scored)
        if encoder:
            ids, labels = [tokenizer.cls_id] + ids + [tokenizer.sep_id], [IGNORE] + labels + [IGNORE]
        out.ids.append(ids)
        out.types.append([0] * len(ids))
        out.targets.append(labels)
    return out


def pad_batch(ids: list[list[int]], types: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest: input_ids, token_type_ids (B, T) and attention_mask (True = real)."""
    T = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    token_types = torch.zeros((len(ids), T), dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.bool)
    for i, (r, t) in enumerate(zip(ids, types)):
        input_ids[i, :len(r)] = torch.tensor(r)
        token_types[i, :len(t)] = torch.tensor(t)
        mask[i, :len(r)] = True
    return {"input_ids": input_ids, "token_type_ids": token_types, "attention_mask": mask}


def by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length, longest first: for evaluation and prediction,
    where every row is scored once and the order does not matter (callers put results back)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


class ShuffledBatches:
    """Endless batches over the examples, a fresh seeded shuffle every epoch (state saved with runs).

    With `lengths` (each row's token count), rows of similar length share a batch, so a short row
    pays for little padding: each epoch shuffles the rows, sorts them by length within pools of
    POOL batches, cuts the pools into batches and shuffles the order of the batches (the one short
    batch, when n is not a multiple of batch_size, comes last). Every row is still seen once per
    epoch; pools keep each batch's members changing from epoch to epoch. The state is the same
    either way (the epoch's row order and the position in it), so a run saved before bucketing
    existed resumes, and buckets from its next epoch.
    """

    POOL = 50  # batches per pool: the larger, the less padding and the more alike the epochs

    def __init__(self, n: int, batch_size: int, seed: int, lengths: list[int] | None = None):
        if n == 0:
            raise LmforgeError("there are no training examples; give a file with rows")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} rows")
        self.n, self.batch_size, self.lengths = n, batch_size, lengths
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.pos = 0

    def _epoch(self) -> list[int]:
        """The next epoch's rows in the order they are served."""
        rows = torch.randperm(self.n, generator=self.generator).tolist()
        if self.lengths is None:
            return rows
        pool = self.batch_size * self.POOL
        rows = [i for s in range(0, self.n, pool) for i in sorted(rows[s:s + pool], key=lambda i: -self.lengths[i])]
        batches = [rows[s:s + self.batch_size] for s in range(0, self.n, self.batch_size)]
        whole = len(batches) - (self.n % self.batch_size != 0)  # the short batch, if any, stays last
        shuffled = [batches[b] for b in torch.randperm(whole, generator=self.generator).tolist()] + batches[whole:]
        return [i for batch in shuffled for i in batch]

    def next_indices(self) -> list[int]:
        if self.pos >= len(self.order):
            self.order, self.pos = self._epoch(), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": torch.tensor(self.order, dtype=torch.long),
                "pos": torch.tensor(self.pos)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"].tolist(), int(state["pos"])
