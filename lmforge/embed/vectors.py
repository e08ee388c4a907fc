"""Word vectors to query: nearest neighbours by cosine similarity, analogies, and the file they live in.

    cos(a, b) = a . b / (|a| |b|)
    analogy    a : b :: c : ?   the word d (not a, b or c) that maximises cos(d, b - a + c), with every
               vector first scaled to length 1 (3CosAdd; Mikolov et al., 2013): king - man + woman ~ queen

Vectors come from word2vec (word2vec.py) or from a model's input embeddings (`from_model`: a word's
vector is the mean of its tokens' embeddings). A folder written by `lmforge embed train` holds
vectors.txt in word2vec's text format (a header "count dim", then a word and its numbers a line),
which gensim's KeyedVectors.load_word2vec_format also reads, and report.json.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from lmforge.data.encoder import jieba_words
from lmforge.errors import LmforgeError
from lmforge.tokenizer import HAN
from lmforge.io import atomic_path, write_json

WORD = re.compile(r"\w+(?:['’]\w+)*")
CJK = re.compile(f"[{HAN}]")


def corpus_words(docs: list[str]) -> list[list[str]]:
    """Each document as its words: lower-cased runs of letters and digits; Chinese text through
    jieba (a document with a CJK character is segmented whole)."""
    out = []
    for d in docs:
        if CJK.search(d):
            out.append([w.lower() for w in jieba_words(d) if WORD.fullmatch(w)])
        else:
            out.append(WORD.findall(d.lower()))
    return out


class WordVectors:
    """words and their vectors (one row each); rows scaled to length 1 for the similarity queries."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        self.words = list(words)
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.index = {w: i for i, w in enumerate(self.words)}
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.unit = self.vectors / np.maximum(norms, 1e-12)

    def vector(self, word: str) -> np.ndarray:
        if word not in self.index:
            lower = word.lower()
            if lower in self.index:
                return self.unit[self.index[lower]]
            raise LmforgeError(f"{word!r} is not among the {len(self.words):,} words of these vectors; give a word of "
                               "the corpus (rarer words than --min-count are left out)")
        return self.unit[self.index[word]]

    def similar(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The k words nearest `word` by cosine similarity."""
        return self._nearest(self.vector(word), k, {self._key(word)})

    def analogy(self, a: str, b: str, c: str, k: int = 1) -> list[tuple[str, float]]:
        """a : b :: c : ?  (3CosAdd)."""
        target = self.vector(b) - self.vector(a) + self.vector(c)
        return self._nearest(target / max(np.linalg.norm(target), 1e-12), k, {self._key(x) for x in (a, b, c)})

    def _key(self, word: str) -> str:
        return word if word in self.index else word.lower()

    def _nearest(self, target: np.ndarray, k: int, leave_out: set[str]) -> list[tuple[str, float]]:
        scores = self.unit @ target
        out = []
        for i in np.argsort(-scores):
            if self.words[i] not in leave_out:
                out.append((self.words[i], round(float(scores[i]), 4)))
                if len(out) == k:
                    break
        return out

    def save(self, folder: str | Path, report: dict) -> Path:
        """vectors.txt (word2vec's text format) and report.json into `folder`, each written whole."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "vectors.txt") as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{len(self.words)} {self.vectors.shape[1]}\n")
            for w, row in zip(self.words, self.vectors):
                f.write(w + " " + " ".join(f"{x:.6g}" for x in row) + "\n")
        write_json(folder / "report.json", report)
        return folder

    @classmethod
    def load(cls, path: str | Path) -> "WordVectors":
        """A folder from `lmforge embed train`, or a vectors file in word2vec's text format."""
        path = Path(path)
        file = path / "vectors.txt" if path.is_dir() else path
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
            count, dim = (int(x) for x in lines[0].split())
            words, rows = [], []
            for line in lines[1:count + 1]:
                parts = line.rstrip().split(" ")
                words.append(" ".join(parts[:-dim]))
                rows.append([float(x) for x in parts[-dim:]])
            vectors = np.array(rows, dtype=np.float32).reshape(len(rows), dim)
        except (OSError, UnicodeDecodeError, ValueError, IndexError):
            raise LmforgeError(f"{path} is not word vectors; give a folder made by `lmforge embed train` or a file in "
                               "word2vec's text format") from None
        return cls(words, vectors)


def from_model(run: str | Path, docs: list[list[str]], top: int = 20000, min_count: int = 1) -> tuple[list[str], np.ndarray]:
    """The input embeddings of an lmforge or Hugging Face run, as vectors of the corpus's `top` most
    frequent words (each the mean of its tokens' embeddings, special tokens left out)."""
    import torch

    from lmforge.checkpoint import load_pretrained

    model, tok = load_pretrained(run)
    table = next((m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)
                  and m.num_embeddings == tok.vocab_size), None)
    if table is None:
        table = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding))
    table = table.detach().float()
    counts = Counter(w for d in docs for w in d)
    words = [w for w, c in counts.most_common(top) if c >= min_count]
    specials = tok.special_ids
    lead = " " if tok.kind == "bpe" else ""  # byte-level BPE spells a word inside a sentence with its space
    vectors = []
    for w in words:
        ids = [i for i in tok.encode(lead + w) if i not in specials and i < len(table)]
        vectors.append(table[ids].mean(0).numpy() if ids else np.zeros(table.shape[1], dtype=np.float32))
    return words, np.stack(vectors) if vectors else np.zeros((0, table.shape[1]), dtype=np.float32)
