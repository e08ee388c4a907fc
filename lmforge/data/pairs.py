"""Encoder batches: BERT's sentence pairs for next-sentence prediction, or RoBERTa-style runs of sentences.

With NSP each row is `[CLS] A [SEP] B [SEP]` (token types 0 up to the first [SEP], 1 after), padded:
  A  one or more consecutive sentences of one document;
  B  with probability 1/2 the sentences right after A in the same document (label 0, "is next"),
     else sentences from a different document (label 1, "random"): the Hugging Face convention.
A+B is cut to max_len - 3 tokens by shortening the longer one, one token at a time, as BERT does;
here A loses tokens from its start and B from its end, so an is-next pair stays adjacent at [SEP].
Without NSP each row is `[CLS] S [SEP]`: up to max_len - 2 consecutive tokens of one document,
starting at a sentence and running across sentence ends, never across a document end.

A row starts at a sentence drawn uniformly from the split (for is-next, from those followed by
another sentence of their document). Training batches come from a seeded generator whose state is
saved with each checkpoint, so a resumed run sees the same batches; `eval_batches` gives the same
validation batches every time.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from lmforge.data.encoder import EncoderSplit
from lmforge.errors import LmforgeError


def fit_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after removing one token at a time from the longer of A and B (B on a tie) until
    len_a + len_b <= budget."""
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    gap = min(excess, abs(len_a - len_b))  # first the longer one comes down to the other
    if len_a > len_b:
        len_a -= gap
    else:
        len_b -= gap
    excess -= gap
    return len_a - excess // 2, len_b - (excess - excess // 2)  # then they alternate, B first


def check_split(split: EncoderSplit, max_len: int, nsp: bool, name: str = "training") -> None:
    """Refuse a split that cannot give batches (`name`: which split, for the message): before any
    training, so that a validation split too small fails at the start, not at the first evaluation."""
    fix = "give more text" + (" or a larger data.val_fraction" if name == "validation" else "")
    if split.n_sentences == 0:
        raise LmforgeError(f"the {name} split has no sentences to build batches from; {fix}")
    if max_len < (5 if nsp else 3):
        raise LmforgeError(f"a context of {max_len} tokens leaves no room for "
                           f"{'[CLS] A [SEP] B [SEP]' if nsp else '[CLS] text [SEP]'}; use a longer model.context_length")
    if nsp and split.n_documents < 2:
        raise LmforgeError(f"next-sentence prediction needs at least two documents in the {name} split (a random B "
                           f"comes from another one), and it has {split.n_documents}; {fix}, or use "
                           "train.objective=mlm")
    sent_doc = split.sent_doc
    if nsp and not (sent_doc[:-1] == sent_doc[1:]).any():
        raise LmforgeError(f"next-sentence prediction needs documents of two or more sentences, and every document of "
                           f"the {name} split has one; {fix} with longer documents, or use train.objective=mlm")


class PairBatches:
    """Endless seeded batches from one split; `next()` gives a dict of (B, T) tensors, T = max_len:
    input_ids, token_type_ids, attention_mask (bool, True at real tokens), word_ids (-1 at specials
    and padding), and with nsp next_sentence_label (B,) (0 = B follows A, 1 = B is random)."""

    def __init__(self, split: EncoderSplit, batch_size: int, max_len: int, *, cls_id: int, sep_id: int,
                 pad_id: int, nsp: bool = True, seed: int = 0, name: str = "training"):
        check_split(split, max_len, nsp, name)
        self.split, self.batch_size, self.max_len, self.nsp = split, batch_size, max_len, nsp
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.doc_offsets = split.doc_offsets  # (D + 1,) sentence ranges of the documents
        doc = split.sent_doc
        self.followed = np.flatnonzero(doc[:-1] == doc[1:])  # sentences with a next one in their document
        self.generator = torch.Generator().manual_seed(seed)

    # -------------------------------------------------------------------- one row

    def _run(self, s: int, budget: int, at_least: int = 1) -> int:
        """End (exclusive) of the shortest run of sentences from s holding `budget` tokens, within s's document."""
        offsets = self.split.sent_offsets
        doc_end = int(self.doc_offsets[self.split.sent_doc[s] + 1])
        e = int(np.searchsorted(offsets, offsets[s] + budget, side="left"))
        return min(max(e, s + at_least), doc_end)

    def _tokens(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and word ids of sentences s..e-1."""
        a, b = self.split.sent_offsets[s], self.split.sent_offsets[e]
        return self.split.tokens[a:b], self.split.word_ids[a:b]

    def _pair(self, u: np.ndarray) -> tuple[tuple, tuple, int]:
        """(A tokens, A words), (B tokens, B words), label from four uniforms."""
        budget, S = self.max_len - 3, self.split.n_sentences
        is_next = u[0] < 0.5
        if is_next:
            s = int(self.followed[int(u[1] * len(self.followed))])
            e = self._run(s, budget, at_least=2)
            a_end = s + 1 + int(u[2] * (e - s - 1))  # A = s..a_end-1, B = a_end..e-1, both non-empty
            b_start, b_end = a_end, e
        else:
            s = int(u[1] * S)
            e = self._run(s, budget)
            a_end = s + 1 + int(u[2] * (e - s))  # A = s..a_end-1
            d = int(self.split.sent_doc[s])
            d0, d1 = int(self.doc_offsets[d]), int(self.doc_offsets[d + 1])
            k = int(u[3] * (S - (d1 - d0)))  # a sentence outside A's document, uniformly
            b_start = k if k < d0 else k + (d1 - d0)
            len_a = int(self.split.sent_offsets[a_end] - self.split.sent_offsets[s])
            b_end = self._run(b_start, max(1, budget - len_a))
        a, b = self._tokens(s, a_end), self._tokens(b_start, b_end)
        la, lb = fit_pair(len(a[0]), len(b[0]), budget)
        a = (a[0][len(a[0]) - la:], a[1][len(a[1]) - la:])  # A keeps its end, next to B
        b = (b[0][:lb], b[1][:lb])
        return a, b, 0 if is_next else 1

    def _segment(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = int(u[1] * self.split.n_sentences)
        doc_end = self.doc_offsets[self.split.sent_doc[s] + 1]
        a = self.split.sent_offsets[s]
        b = min(self.split.sent_offsets[doc_end], a + self.max_len - 2)
        return self.split.tokens[a:b], self.split.word_ids[a:b]

    # -------------------------------------------------------------------- batches

    def collate(self, rows: list) -> dict:
        """Rows of ((A ids, A words), (B ids, B words), label), or of (ids, words) without NSP -> tensors."""
        B, T = len(rows), self.max_len
        ids = np.full((B, T), self.pad_id, dtype=np.int64)
        types = np.zeros((B, T), dtype=np.int64)
        words = np.full((B, T), -1, dtype=np.int64)
        real = np.zeros((B, T), dtype=bool)
        labels = np.zeros(B, dtype=np.int64)
        for i, row in enumerate(rows):
            if self.nsp:
                (a, wa), (b, wb), labels[i] = row
                la, lb = len(a), len(b)
                ids[i, :la + lb + 3] = np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]])
                words[i, 1:la + 1], words[i, la + 2:la + lb + 2] = wa, wb
                types[i, la + 2:la + lb + 3] = 1  # B and its [SEP]
                real[i, :la + lb + 3] = True
            else:
                a, wa = row
                ids[i, :len(a) + 2] = np.concatenate([[self.cls_id], a, [self.sep_id]])
                words[i, 1:len(a) + 1] = wa
                real[i, :len(a) + 2] = True
        out = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
               "attention_mask": torch.from_numpy(real), "word_ids": torch.from_numpy(words)}
        if self.nsp:
            out["next_sentence_label"] = torch.from_numpy(labels)
        return out

    def next(self) -> dict:
        u = torch.rand((self.batch_size, 4), generator=self.generator, dtype=torch.float64).numpy()  # (B, 4)
        make = self._pair if self.nsp else self._segment
        return self.collate([make(row) for row in u])

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def eval_batches(split: EncoderSplit, batch_size: int, max_len: int, *, cls_id: int, sep_id: int, pad_id: int,
                 nsp: bool = True, n_batches: int | None = None, seed: int = 0) -> Iterator[dict]:
    """The same validation batches on every call. Without NSP: each document cut into consecutive
    pieces of max_len - 2 tokens, so every token is scored once (or `n_batches` batches of pieces
    spread evenly over the split). With NSP: pairs drawn with a fresh generator seeded by `seed`,
    `n_batches` batches, or by default enough to cover the split's tokens about once."""
    src = PairBatches(split, batch_size, max_len, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id, nsp=nsp, seed=seed,
                      name="validation")
    if nsp:
        n = n_batches if n_batches is not None else max(1, -(-len(split.tokens) // (batch_size * (max_len - 3))))
        for _ in range(n):
            yield src.next()
        return
    offsets, width = split.sent_offsets, max_len - 2
    pieces = [(a, min(a + width, int(offsets[e])))
              for s, e in zip(src.doc_offsets[:-1], src.doc_offsets[1:]) for a in range(int(offsets[s]), int(offsets[e]), width)]
    if n_batches is not None and len(pieces) > n_batches * batch_size:
        pick = np.linspace(0, len(pieces) - 1, n_batches * batch_size).round().astype(int)
        pieces = [pieces[i] for i in pick]
    for i in range(0, len(pieces), batch_size):
        yield src.collate([(split.tokens[a:b], split.word_ids[a:b]) for a, b in pieces[i:i + batch_size]])
