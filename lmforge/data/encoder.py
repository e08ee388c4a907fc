"""Encoder pretraining data (BERT, ELECTRA): documents -> sentences -> tokens with word ids, in flat arrays.

corpus -> clean (data/clean.py) -> split by document -> tokenizer -> sentences -> words -> token ids.

Split: whole documents, never a cut inside one: the last documents, holding about `val_fraction` of
the characters, validate. Sentence pairs never cross a document, so no validation pair was seen in
training. A corpus of a single document (one .txt file) is first cut into documents at blank lines.

Sentences (simple rules, not a parser): a newline ends one; so does, in English, . ! or ? (with any
closing quotes or brackets) followed by whitespace, and in Chinese any run of 。！？；… or their ASCII
forms !?; (NFKC turns the full-width ones into those), with closing quotes. "Mr. Smith" is cut after
"Mr.": noise that pretraining tolerates.

Words, for whole-word masking, in order of preference:
  (a) the corpus's own segmentation (`Corpus.words`, e.g. People's Daily): a pre-segmented
      document is rebuilt from its words (joined with nothing in Chinese, else with a space);
  (b) Chinese text: `jieba`, when installed (`pip install "lmforge[chinese]"`);
  (c) otherwise BERT's pre-tokens: with WordPiece a word starts at every token not starting with
      "##"; with other tokenizers a word is a run of letters and digits, or one punctuation mark or
      CJK character.
Words are character spans; a token belongs to the word holding its last character (a token of
spaces only to the word after it).

The arrays of one split (`EncoderSplit`):
  tokens        int32 (N,)     the token ids of every sentence, back to back
  word_ids      int32 (N,)     the word of each token: increasing, equal = one word, unique in the split
  sent_offsets  int64 (S + 1,) sentence s is tokens[sent_offsets[s]:sent_offsets[s + 1]]
  sent_doc      int32 (S,)     the document of each sentence: 0..D-1, a document's sentences contiguous
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from lmforge.config import DataConfig
from lmforge.data.anonymize import anonymize_documents
from lmforge.data.clean import clean_documents, paragraphs
from lmforge.data.corpora import load_corpus
from lmforge.data.shards import get_tokenizer
from lmforge.errors import LmforgeError
from lmforge.tokenizer import HAN, Tokenizer

__all__ = ["EncoderSplit", "EncoderData", "prepare_encoder", "encode_split", "split_sentences",
           "split_by_document"]

_CLOSE = re.escape("\"'”’」』》）)]")  # closing quotes and brackets stay with their sentence
_SENTENCE_END = {
    "en": re.compile(rf"[.!?]+[{_CLOSE}]*(?=\s)|\n+"),
    "zh": re.compile(rf"[。！？；…!?;]+[{_CLOSE}]*|\n+"),
}
_WORD = re.compile(rf"[{HAN}]|[^\W_{HAN}]+|[^\w\s]|_")  # rule (c) for tokenizers other than WordPiece


@dataclass
class EncoderSplit:
    """One split as flat arrays (see the module docstring)."""

    tokens: np.ndarray  # int32 (N,)
    word_ids: np.ndarray  # int32 (N,)
    sent_offsets: np.ndarray  # int64 (S + 1,)
    sent_doc: np.ndarray  # int32 (S,)

    @property
    def n_sentences(self) -> int:
        return len(self.sent_doc)

    @property
    def n_documents(self) -> int:
        return int(self.sent_doc[-1]) + 1 if len(self.sent_doc) else 0

    @property
    def doc_offsets(self) -> np.ndarray:
        """int64 (D + 1,): document d holds sentences doc_offsets[d]:doc_offsets[d + 1]."""
        return np.searchsorted(self.sent_doc, np.arange(self.n_documents + 1)).astype(np.int64)

    def sentence(self, s: int) -> np.ndarray:
        return self.tokens[self.sent_offsets[s]:self.sent_offsets[s + 1]]


@dataclass
class EncoderData:
    """The tokenizer and the train / validation splits of one corpus."""

    tokenizer: Tokenizer
    train: EncoderSplit
    val: EncoderSplit
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- text rules


def split_sentences(text: str, language: str = "en") -> list[tuple[int, int]]:
    """Character spans (start, end) of the sentences of `text`, surrounding whitespace left out."""
    ends = [m.end() for m in _SENTENCE_END["zh" if language == "zh" else "en"].finditer(text)]
    spans, start = [], 0
    for end in ends + [len(text)]:
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        body = piece.strip()
        if body:
            spans.append((start + lead, start + lead + len(body)))
        start = end
    return spans


def split_by_document(docs: list[str], val_fraction: float) -> int:
    """How many leading documents train: the cut between documents nearest to (1 - f) of the characters."""
    if not 0.0 < val_fraction < 1.0:
        raise LmforgeError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
    if len(docs) < 2:
        raise LmforgeError("the corpus has a single document (even after cutting at blank lines), so no whole "
                           "document can be held out for validation; give more documents")
    ends = np.cumsum([len(d) for d in docs])  # (D,) characters up to the end of each document
    target = ends[-1] * (1.0 - val_fraction)
    k = int(np.argmin(np.abs(ends[:-1] - target))) + 1  # train = docs[:k], 1 <= k <= D - 1
    return k


def _jieba():
    try:
        import jieba
    except ImportError:
        return None
    jieba.setLogLevel(logging.WARNING)  # it announces loading its dictionary on stderr otherwise
    return jieba


def jieba_words(text: str) -> list[str]:
    """Chinese text as jieba's words (spaces left out); without jieba, an error that names the extra."""
    seg = _jieba()
    if seg is None:
        raise LmforgeError("Chinese text needs jieba to find its words: pip install 'lmforge[data]'")
    return [w for w in seg.lcut(text) if w.strip()]


def _word_spans(text: str, method: str, seg=None) -> list[tuple[int, int]]:
    if method == "jieba":
        return [(s, e) for w, s, e in seg.tokenize(text) if not w.isspace()]
    return [m.span() for m in _WORD.finditer(text)]


# ---------------------------------------------------------------------------- tokens and words


def encode_split(tok: Tokenizer, docs: list[str], language: str = "en", words: list[list[str]] | None = None,
                 method: str = "pre-tokens") -> EncoderSplit:
    """Documents -> EncoderSplit. `method`: "corpus" (use `words`, one list per document, each
    document being its words joined by `_word_sep(language)`), "jieba", "pre-tokens" (rule (c)) or
    "tokens" (every token a word of its own: plain, not whole-word, masking)."""
    sents, sent_start, sent_doc = [], [], []  # sentence texts, their start in the document, document
    for d, text in enumerate(docs):
        for s, e in split_sentences(text, language):
            sents.append(text[s:e])
            sent_start.append(s)
            sent_doc.append(d)
    encoded = tok.encode_offsets_batch(sents)
    lens = np.fromiter((len(ids) for ids, _ in encoded), dtype=np.int64, count=len(encoded))  # (S,)
    n = int(lens.sum())
    tokens = np.fromiter(chain.from_iterable(ids for ids, _ in encoded), dtype=np.int64, count=n)
    sent_doc = np.asarray(sent_doc, dtype=np.int64)

    if method == "tokens":
        word_ids = np.arange(n, dtype=np.int64)
    elif method == "pre-tokens" and tok.kind == "wordpiece":
        continuation = np.zeros(tok.vocab_size, dtype=bool)
        for piece, i in tok.hf.get_vocab().items():
            continuation[i] = piece.startswith("##")
        starts = ~continuation[tokens]  # (N,) True where a word begins
        first = np.cumsum(lens) - lens  # (S,) where each sentence begins
        starts[first[lens > 0]] = True  # a sentence never begins inside a word
        word_ids = np.cumsum(starts) - 1
    else:
        # Everything in one coordinate system: characters counted from the start of the first document.
        doc_base = np.concatenate([[0], np.cumsum([len(t) for t in docs])])  # (D + 1,)
        ends_of, n_words = [], np.zeros(len(docs), dtype=np.int64)
        seg = _jieba() if method == "jieba" else None
        for d, text in enumerate(docs):
            if method == "corpus":
                sep = len(_word_sep(language))
                e = np.cumsum(np.fromiter(map(len, words[d]), dtype=np.int64) + sep) - sep
            else:
                e = np.asarray([end for _, end in _word_spans(text, method, seg)], dtype=np.int64)
            if len(e) == 0:  # no word at all: the whole document is one
                e = np.asarray([len(text)], dtype=np.int64)
            ends_of.append(e + doc_base[d])
            n_words[d] = len(e)
        word_end = np.concatenate(ends_of) if ends_of else np.zeros(0, dtype=np.int64)  # (W,) sorted
        last_word = np.cumsum(n_words) - 1  # (D,) index of each document's last word
        tok_end = np.fromiter(chain.from_iterable(chain.from_iterable(o for _, o in encoded)),
                              dtype=np.int64, count=2 * n)[1::2]  # (N,) end offsets within the sentence
        token_sent = np.repeat(np.arange(len(lens)), lens)  # (N,)
        base = doc_base[sent_doc] + np.asarray(sent_start, dtype=np.int64)  # (S,) sentence start
        at = base[token_sent] + np.maximum(tok_end - 1, 0)  # (N,) the token's last character
        word_ids = np.minimum(np.searchsorted(word_end, at, side="right"), last_word[sent_doc[token_sent]])

    # Sentences with no token (e.g. only characters the normaliser drops) go; documents are renumbered.
    keep = lens > 0
    sent_doc = np.unique(sent_doc[keep], return_inverse=True)[1] if keep.any() else sent_doc[keep]
    return EncoderSplit(
        tokens=tokens.astype(np.int32),
        word_ids=word_ids.astype(np.int32),
        sent_offsets=np.concatenate([[0], np.cumsum(lens[keep])]).astype(np.int64),
        sent_doc=np.asarray(sent_doc, dtype=np.int32),
    )


def _word_sep(language: str) -> str:
    return "" if language == "zh" else " "


# ---------------------------------------------------------------------------- the pipeline


def _clean(corpus, do_clean: bool, near: float = 0.0) -> tuple[list[str], list[list[str]] | None, object]:
    """Cleaned documents (and their words when the corpus is pre-segmented) and the clean report."""
    if corpus.words is None:
        docs, report = clean_documents(corpus.documents, near=near) if do_clean else (corpus.documents, None)
        return [d for d in docs if d.strip()], None, report
    # Clean the words with a newline between them: cleaning keeps newlines, and no word holds one.
    joined = ["\n".join(ws) for ws in corpus.words]
    joined, report = clean_documents(joined) if do_clean else (joined, None)
    words = [[w for w in j.split("\n") if w.strip()] for j in joined]
    words = [ws for ws in words if ws]
    return [_word_sep(corpus.language).join(ws) for ws in words], words, report


def prepare_encoder(data_cfg: DataConfig, tokenizer: Tokenizer | None = None, log=print,
                    whole_word: bool | None = None) -> EncoderData:
    """Corpus -> clean -> split by document -> tokenizer -> sentences, tokens and words of each split.

    `whole_word`: None segments words where it can (Chinese without jieba then gets one word per
    character); True insists on real words (Chinese needs jieba); False skips segmentation (each token a word).
    """
    t0 = time.perf_counter()
    cfg = data_cfg
    corpus = load_corpus(cfg.corpus, column=cfg.column)
    docs, words, report = _clean(corpus, cfg.clean, cfg.near_duplicates)
    if report is not None:
        log(report.summary())
    if cfg.anonymize:
        docs = anonymize_documents(docs, log)
        words = None if words is None else [anonymize_documents(ws, lambda *a: None) for ws in words]
    if words is None:
        docs = paragraphs(docs)
    if not docs:
        raise LmforgeError(f"corpus {cfg.corpus!r} has no text left after cleaning; check the file's contents")
    k = split_by_document(docs, cfg.val_fraction)
    train_docs, val_docs = docs[:k], docs[k:]
    tok = tokenizer or get_tokenizer(cfg, train_docs)

    if whole_word is False:
        method = "tokens"
    elif words is not None:
        method = "corpus"
    elif corpus.language == "zh" and _jieba() is not None:
        method = "jieba"
    elif corpus.language == "zh" and whole_word:
        raise LmforgeError("whole-word masking of Chinese text needs word segmentation by jieba, which is not "
                           'installed; run `pip install "lmforge[chinese]"` (or turn whole-word masking off)')
    else:
        method = "pre-tokens"
        if corpus.language == "zh":
            log('jieba is not installed, so each Chinese character is a word of its own; '
                '`pip install "lmforge[chinese]"` segments real words for whole-word masking')
    log(f"tokenising {corpus.name} ({sum(map(len, docs)):,} characters, {len(docs):,} documents; "
        f"words: {method}) ...")
    train = encode_split(tok, train_docs, corpus.language, words[:k] if words else None, method)
    val = encode_split(tok, val_docs, corpus.language, words[k:] if words else None, method)
    meta = {"corpus": corpus.name, "language": corpus.language, "tokenizer": tok.fingerprint(),
            "vocab_size": tok.vocab_size, "words": method, "clean": report.as_dict() if report else None}
    for name, split, part in (("train", train, train_docs), ("val", val, val_docs)):
        meta.update({f"{name}_documents": split.n_documents, f"{name}_sentences": split.n_sentences,
                     f"{name}_tokens": int(len(split.tokens)), f"{name}_chars": sum(map(len, part)),
                     f"{name}_words": int(len(np.unique(split.word_ids)))})
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    return EncoderData(tok, train, val, meta)
