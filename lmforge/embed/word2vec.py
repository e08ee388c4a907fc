"""Word vectors by skip-gram with negative sampling (Mikolov et al., 2013), in PyTorch.

Each word w has two vectors: v_w when it is the centre of a window, u_w when it is a context word.
A centre c and a word o seen within its window are pulled together, and k words drawn from the
noise distribution P_n are pushed away:

    loss(c, o) = -log sigma(u_o . v_c) - sum_{i=1..k} log sigma(-u_{n_i} . v_c),   n_i ~ P_n(w) ~ count(w)^0.75

sigma(x) = 1 / (1 + e^-x): the model's probability that (c, o) is a real pair rather than noise.
As word2vec does:
    window     each centre looks b words either side, b drawn uniformly from 1..window (nearer words
               count more often); windows stop at the end of a document
    subsample  a word of frequency f (its share of the corpus) is kept with probability
               min(1, (sqrt(f / t) + 1) t / f), t = 1e-3: "the" is mostly dropped, rare words never
    min_count  rarer words are left out of the vocabulary (and of the text)
    SGD        the learning rate falls linearly from lr to lr / 10,000 over training; v starts
               uniform in +-0.5 / dim, u at zero
The kept vectors are v (the centre vectors), as word2vec writes them.

The pairs of a chunk of text are made at once in NumPy (one pass per offset 1..window), shuffled,
and trained in batches whose loss is summed over pairs, so each pair moves its vectors by lr times
its own gradient, as word2vec's one-pair-at-a-time updates do.

gensim's C implementation is the peer, and `python -m bench.data` trains both on the same corpus:
neighbours and word-similarity scores come out alike, and gensim is several times faster on a CPU
(word2vec's one-pair-at-a-time updates in C against PyTorch's batched gathers and index_add_). So
backend "auto" trains with gensim where it is installed (the embed extra) and with this code
elsewhere: without the extra, or on a GPU (device="cuda"), where gensim cannot run.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError


@dataclass
class Word2VecConfig:
    dim: int = 100
    window: int = 5
    negatives: int = 5
    min_count: int = 5
    epochs: int = 5
    lr: float = 0.025
    sample: float = 1e-3  # subsampling threshold t; 0 keeps every word
    batch_size: int = 4096
    seed: int = 0
    chunk: int = 1_000_000  # tokens whose pairs are made at once
    backend: str = "auto"  # auto (gensim if installed, else torch) | gensim | torch
    device: str = "cpu"  # torch backend: cpu or cuda


@dataclass
class Vocabulary:
    words: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}


def vocabulary(docs: list[list[str]], min_count: int) -> Vocabulary:
    counts = Counter(w for d in docs for w in d)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return Vocabulary(kept, np.array([counts[w] for w in kept], dtype=np.int64))


def keep_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """word2vec's subsampling: P(keep w) = min(1, (sqrt(f / t) + 1) t / f), f = count / total."""
    if t <= 0:
        return np.ones(len(counts))
    f = counts / counts.sum()
    return np.minimum(1.0, (np.sqrt(f / t) + 1) * t / f)


def noise_distribution(counts: np.ndarray) -> np.ndarray:
    """P_n(w) = count(w)^0.75 / sum_w' count(w')^0.75."""
    p = counts.astype(np.float64) ** 0.75
    return p / p.sum()


def noise_table(counts: np.ndarray, size: int = 10_000_000) -> torch.Tensor:
    """word2vec's unigram table: word w fills round(P_n(w) size) slots (at least one), so a uniform draw
    of a slot draws from P_n: much faster than a categorical draw over the vocabulary each batch."""
    slots = np.maximum(1, np.round(noise_distribution(counts) * size)).astype(np.int64)
    return torch.from_numpy(np.repeat(np.arange(len(counts)), slots))


def window_pairs(ids: np.ndarray, doc: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """(centre, context) pairs of a token stream: each centre's reach b ~ U{1..window}, never across
    a document boundary (doc: each token's document number). Returns an (N, 2) array."""
    reach = rng.integers(1, window + 1, size=len(ids))
    out = []
    for o in range(1, window + 1):
        same = doc[:-o] == doc[o:]
        right = same & (reach[:-o] >= o)  # centre i, context i + o
        left = same & (reach[o:] >= o)  # centre i + o, context i
        out.append(np.stack([ids[:-o][right], ids[o:][right]], 1))
        out.append(np.stack([ids[o:][left], ids[:-o][left]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


class SkipGram:
    """v (centre) and u (context) vectors and the SGD step on a batch of pairs.

    With s = sigma(u_o . v_c) for the pair and s_i = sigma(u_{n_i} . v_c) for each noise word, the
    loss's gradients are
        d/dv_c = (s - 1) u_o + sum_i s_i u_{n_i}      d/du_o = (s - 1) v_c      d/du_{n_i} = s_i v_c
    The step writes them out rather than asking autograd: the same numbers (a test checks them against
    autograd), without building sparse gradient tensors for two tables of vocabulary x dim, which made
    training several times slower."""

    def __init__(self, vocab_size: int, dim: int, device: str = "cpu"):
        self.v = torch.empty(vocab_size, dim, device=device).uniform_(-0.5 / dim, 0.5 / dim)
        self.u = torch.zeros(vocab_size, dim, device=device)

    def loss(self, centre: torch.Tensor, context: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Each pair's loss (B,): centre, context (B,) and noise (B, k) word ids."""
        v = self.v[centre]  # (B, D)
        pos = (self.u[context] * v).sum(-1)  # (B,)
        neg = torch.bmm(self.u[noise], v.unsqueeze(-1)).squeeze(-1)  # (B, k)
        return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1))

    def step(self, centre: torch.Tensor, context: torch.Tensor, noise: torch.Tensor, lr: float) -> float:
        """One SGD step of every pair's own gradient (summed where pairs share a word); the summed loss."""
        v, u_o, u_n = self.v[centre], self.u[context], self.u[noise]  # (B, D), (B, D), (B, k, D)
        pos = (u_o * v).sum(-1)  # (B,)
        neg = (u_n * v.unsqueeze(1)).sum(-1)  # (B, k)
        g_pos = torch.sigmoid(pos) - 1  # (B,)
        g_neg = torch.sigmoid(neg)  # (B, k)
        self.v.index_add_(0, centre, g_pos.unsqueeze(-1) * u_o + (g_neg.unsqueeze(-1) * u_n).sum(1), alpha=-lr)
        grad_u = torch.cat([g_pos.unsqueeze(-1) * v, (g_neg.unsqueeze(-1) * v.unsqueeze(1)).flatten(0, 1)])
        self.u.index_add_(0, torch.cat([context, noise.flatten()]), grad_u, alpha=-lr)  # (B + B k, D)
        return float(-(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).sum())


def check_corpus(docs: list[list[str]], cfg: Word2VecConfig, vocab: Vocabulary) -> None:
    words = sum(len(d) for d in docs)
    need = 2 * cfg.window + 1
    if words < need:
        raise LmforgeError(f"the corpus has {words} word(s), fewer than the {need} one window of --window "
                           f"{cfg.window} spans; give more text or a smaller --window")
    if len(vocab.words) < 2:
        raise LmforgeError(f"only {len(vocab.words)} word(s) occur --min-count {cfg.min_count} times or more in the "
                           f"corpus ({words:,} words); give more text or a lower --min-count")


def train_word2vec(docs: list[list[str]], cfg: Word2VecConfig = Word2VecConfig(),
                   log=print) -> tuple[list[str], np.ndarray, dict]:
    """Skip-gram with negative sampling over `docs` (each a list of words): (words, vectors, report)."""
    vocab = vocabulary(docs, cfg.min_count)
    check_corpus(docs, cfg, vocab)
    backend = cfg.backend
    if backend == "auto":
        backend = "gensim" if cfg.device == "cpu" and importlib.util.find_spec("gensim") else "torch"
    start = time.perf_counter()
    if backend == "gensim":
        words, vectors, losses = _gensim(docs, cfg)
    elif backend == "torch":
        words, (vectors, losses) = vocab.words, _torch(docs, vocab, cfg, log)
    else:
        raise LmforgeError(f"--backend {backend} is not known; use auto, gensim or torch")
    report = {"method": "word2vec", "backend": backend, "words": len(words), "tokens": sum(len(d) for d in docs),
              "dim": cfg.dim, "window": cfg.window, "negatives": cfg.negatives, "min_count": cfg.min_count,
              "epochs": cfg.epochs, "seconds": round(time.perf_counter() - start, 1)}
    if losses is not None:
        report["loss_per_epoch"] = losses
    return words, vectors, report


def _gensim(docs: list[list[str]], cfg: Word2VecConfig) -> tuple[list[str], np.ndarray, None]:
    try:
        from gensim.models import Word2Vec
    except ImportError:
        raise LmforgeError("--backend gensim needs gensim: pip install 'lmforge[embed]' (or use --backend torch)") from None
    m = Word2Vec(docs, vector_size=cfg.dim, window=cfg.window, negative=cfg.negatives, min_count=cfg.min_count, sg=1,
                 epochs=cfg.epochs, sample=cfg.sample, alpha=cfg.lr, min_alpha=cfg.lr * 1e-4, seed=cfg.seed,
                 workers=max(1, os.cpu_count() or 1))
    return list(m.wv.index_to_key), m.wv.vectors.copy(), None


def _torch(docs: list[list[str]], vocab: Vocabulary, cfg: Word2VecConfig, log) -> tuple[np.ndarray, list[float]]:
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    ids, doc = _stream(docs, vocab)
    keep = keep_probabilities(vocab.counts, cfg.sample)
    model = SkipGram(len(vocab.words), cfg.dim, cfg.device)
    noise = noise_table(vocab.counts).to(cfg.device)
    # the number of pairs training will see, for the learning rate's linear decay: reach averages (window + 1) / 2
    expected = max(1, int(cfg.epochs * keep[ids].sum() * (cfg.window + 1)))
    seen, losses = 0, []
    for epoch in range(cfg.epochs):
        total, n = 0.0, 0
        for lo in range(0, len(ids), cfg.chunk):
            part = slice(lo, lo + cfg.chunk)
            kept = rng.random(len(ids[part])) < keep[ids[part]]
            pairs = torch.from_numpy(window_pairs(ids[part][kept], doc[part][kept], cfg.window, rng)).to(cfg.device)
            pairs = pairs[torch.randperm(len(pairs), device=cfg.device)]
            for b in range(0, len(pairs), cfg.batch_size):
                batch = pairs[b:b + cfg.batch_size]
                lr = cfg.lr * max(1e-4, 1 - seen / expected)
                noise_ids = noise[torch.randint(len(noise), (len(batch), cfg.negatives), device=cfg.device)]
                total += model.step(batch[:, 0], batch[:, 1], noise_ids, lr)
                seen, n = seen + len(batch), n + len(batch)
        losses.append(round(total / max(1, n), 4))
        log(f"word2vec epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f} per pair, {n:,} pairs")
        if not math.isfinite(losses[-1]):
            raise LmforgeError("word2vec's loss is not finite; lower --lr and train again")
    return model.v.cpu().numpy().copy(), losses


def _stream(docs: list[list[str]], vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """The corpus as one array of word ids (words outside the vocabulary left out) and each token's
    document number."""
    ids, doc = [], []
    for i, d in enumerate(docs):
        kept = [vocab.index[w] for w in d if w in vocab.index]
        ids += kept
        doc += [i] * len(kept)
    return np.array(ids, dtype=np.int64), np.array(doc, dtype=np.int64)
