"""The numbers in docs/ are the numbers the code computes."""

import math
from pathlib import Path

import torch

from lmforge.evaluate.perplexity import bits_per_byte, perplexity
from lmforge.nn import attention_weights, causal_mask

DOCS = Path(__file__).resolve().parents[1] / "docs"
Q = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1]])
K = torch.tensor([[1.0, 1, 1], [0, 0, 1], [1, 0, 1]])
V = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]])


def rows(m: torch.Tensor) -> list[str]:
    return ["[" + ", ".join(f"{v:.4f}" for v in row) + "]" for row in m.tolist()]


def test_attention_doc_numbers():
    doc = (DOCS / "attention.md").read_text()
    scores = Q @ K.T
    w = attention_weights(Q, K)
    wc = attention_weights(Q, K, causal_mask(3))
    for m in (scores / math.sqrt(3), w, w @ V, wc, wc @ V, scores / scores.sum(-1, keepdim=True)):
        for r in rows(m):
            assert r in doc, r
    a, b = math.exp(2 / math.sqrt(3)), math.exp(1 / math.sqrt(3))  # the hand calculation of row 1
    for value in (a, b, 2 * a + b):
        assert f"{value:.4f}" in doc, value
    for r in scores.int().tolist():
        assert "[" + ", ".join(map(str, r)) + "]" in doc


def test_language_modeling_doc_numbers():
    doc = (DOCS / "language-modeling.md").read_text()
    nll = [-math.log(p) for p in (0.5, 0.25, 0.8)]
    mean = sum(nll) / 3
    for value in (*nll, mean, perplexity(mean), bits_per_byte(sum(nll), 5)):
        assert f"{value:.4f}" in doc, value
