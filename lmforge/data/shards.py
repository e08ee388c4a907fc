"""Tokenise a corpus once into memory-mapped token files, split into train and validation.

The split is by position in the text, never at random: the first (1 - val_fraction) of the
characters train, the rest validate (nanoGPT's split of tinyshakespeare), so no sentence of the
validation text is seen in training. The tokenizer is trained on the training part only.

Each document ends with the end-of-text token. Token files hold uint16 when the vocabulary fits
(< 65,536 ids), else uint32. Everything is cached under the corpus + tokenizer fingerprint and
written to a temporary folder first (`lmforge.io.atomic_dir`), so an interrupted run or a full disk
never leaves a half-written shard, and processes preparing the same corpus at once all succeed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.config import TRAINABLE, DataConfig
from lmforge.data.anonymize import anonymize_documents
from lmforge.data.clean import clean_documents
from lmforge.data.corpora import load_corpus
from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir, cache_dir
from lmforge.tokenizer import Tokenizer, train_tokenizer

SHARD_FORMAT = 1
_CHUNK = 1 << 18  # long documents are encoded in ~256K-character pieces (cut after a newline) in parallel


@dataclass
class TokenData:
    """The tokenizer and the memory-mapped train / validation token arrays of one corpus."""

    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def val_bytes_per_token(self) -> float:
        return self.meta["val_bytes"] / max(1, len(self.val))


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """First (1 - f) of the characters -> train, the rest -> validation; the document at the cut
    is split at the nearest newline (or exactly at the cut when it has none nearby)."""
    if not 0.0 < val_fraction < 1.0:
        raise LmforgeError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
    total = sum(len(d) for d in docs)
    cut = int(round(total * (1.0 - val_fraction)))
    seen = 0
    for i, doc in enumerate(docs):
        if seen + len(doc) >= cut:
            at = cut - seen
            nl = doc.rfind("\n", max(0, at - 1000), at)
            at = nl + 1 if nl > 0 else at
            head, tail = doc[:at], doc[at:]
            train = docs[:i] + ([head] if head else [])
            val = ([tail] if tail else []) + docs[i + 1:]
            break
        seen += len(doc)
    if not train or not val or not "".join(val).strip():
        raise LmforgeError(
            f"the corpus ({total} characters) is too small to hold out {val_fraction:.0%} for validation; "
            "give more text or change data.val_fraction"
        )
    return train, val


def _fingerprint(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, list):
            for d in p:
                h.update(d.encode("utf-8", "surrogatepass"))
                h.update(b"\x00")
        else:
            h.update(repr(p).encode())
        h.update(b"\x01")
    return h.hexdigest()[:20]


def _pieces(doc: str) -> list[str]:
    out, start = [], 0
    while len(doc) - start > _CHUNK:
        end = doc.rfind("\n", start, start + _CHUNK) + 1 or start + _CHUNK
        out.append(doc[start:end])
        start = end
    out.append(doc[start:])
    return out


def encode_documents(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    """All documents as one token array, each followed by the end-of-text token."""
    pieces, ends = [], []
    for d in docs:
        pieces.extend(_pieces(d))
        ends.append(len(pieces) - 1)
    encoded = tokenizer.encode_batch(pieces)
    eos = tokenizer.eos_id
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    out, j = [], 0
    for i, ids in enumerate(encoded):
        out.append(np.asarray(ids, dtype=dtype))
        if j < len(ends) and i == ends[j]:
            out.append(np.asarray([eos], dtype=dtype))
            j += 1
    return np.concatenate(out) if out else np.zeros(0, dtype=dtype)


def get_tokenizer(cfg: DataConfig, train_docs: list[str]) -> Tokenizer:
    """Load a given tokenizer.json, or train (once, then cache) a BPE / WordPiece / Unigram / char tokenizer on
    `train_docs`."""
    if cfg.tokenizer not in TRAINABLE:
        return Tokenizer.load(cfg.tokenizer)
    vocab = cfg.vocab_size if cfg.tokenizer != "char" else 0
    extra = f"-s{cfg.sentinels}" if cfg.sentinels else ""  # no suffix without sentinels: earlier caches still match
    folder = cache_dir("tokenizers") / f"{cfg.tokenizer}-{vocab}{extra}-{_fingerprint(train_docs)}"
    if not (folder / "tokenizer.json").is_file():
        tok = train_tokenizer(cfg.tokenizer, train_docs, cfg.vocab_size, sentinels=cfg.sentinels)
        with atomic_dir(folder) as tmp:  # a concurrent writer that got there first wins; its folder is kept
            tok.save(tmp / "tokenizer.json")
    return Tokenizer.load(folder / "tokenizer.json")


def prepare(cfg: DataConfig, tokenizer: Tokenizer | None = None, log=print) -> TokenData:
    """Corpus -> clean -> split -> tokenizer -> cached token shards (memory-mapped)."""
    corpus = load_corpus(cfg.corpus, column=cfg.column)
    docs = corpus.documents
    report = None
    if cfg.clean:
        docs, report = clean_documents(docs, near=cfg.near_duplicates)
    if cfg.anonymize:
        docs = anonymize_documents(docs, log)
    if not docs:
        raise LmforgeError(f"corpus {cfg.corpus!r} has no text left after cleaning; check the file's contents")
    train_docs, val_docs = split_documents(docs, cfg.val_fraction)
    tok = tokenizer or get_tokenizer(cfg, train_docs)
    key = _fingerprint(SHARD_FORMAT, train_docs, val_docs, tok.fingerprint())
    folder = cache_dir("shards") / key
    if not (folder / "meta.json").is_file():
        if report is not None:
            log(report.summary())
        log(f"tokenising {corpus.name} ({sum(map(len, docs)):,} characters) ...")

        def write(tmp: Path) -> None:
            meta = {"corpus": corpus.name, "tokenizer": tok.fingerprint(), "vocab_size": tok.vocab_size,
                    "clean": report.as_dict() if report else None,
                    "train_chars": sum(map(len, train_docs)), "val_chars": sum(map(len, val_docs)),
                    "val_bytes": sum(len(d.encode("utf-8", "surrogatepass")) for d in val_docs)}
            for split, part in (("train", train_docs), ("val", val_docs)):
                arr = encode_documents(tok, part)
                with open(tmp / f"{split}.bin", "wb") as f:  # not arr.tofile: a full disk is then ENOSPC, not a
                    f.write(memoryview(arr))  # count of bytes short
                meta[f"{split}_tokens"] = int(len(arr))
                meta["dtype"] = arr.dtype.name
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))  # written last: the commit marker

        with atomic_dir(folder) as tmp:
            write(tmp)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        raise LmforgeError(f"the token cache {folder} is damaged; delete that folder and run again") from None
    meta = {**meta, "corpus": corpus.name, "language": corpus.language}  # the shards may come from another file
    arrays = {s: np.memmap(folder / f"{s}.bin", dtype=meta["dtype"], mode="r") for s in ("train", "val")}
    return TokenData(tok, arrays["train"], arrays["val"], meta)
