"""Loss, perplexity, bits per byte and the bigram baseline against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from lmforge.evaluate.baselines import bigram_eval
from lmforge.evaluate.perplexity import bits_per_byte, perplexity, summarize
from lmforge.objectives.clm import clm_loss


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, ids):
        return self.logits


def test_clm_loss_is_mean_negative_log_likelihood():
    # one sequence of two positions over a vocabulary of three
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    y = torch.tensor([[1, 0]])
    # position 1: uniform -> -ln(1/3); position 2: -ln(e^2 / (e^2 + 2))
    expected = (math.log(3) - math.log(math.exp(2) / (math.exp(2) + 2))) / 2
    assert clm_loss(FixedLogits(logits), None, y).item() == pytest.approx(expected, abs=1e-6)


def test_perplexity_and_bits_per_byte():
    assert perplexity(math.log(50)) == pytest.approx(50)
    # 10 tokens at ln 2 nats each over 5 bytes -> 2 bits per byte
    assert bits_per_byte(10 * math.log(2), 5) == pytest.approx(2.0)
    s = summarize(10 * math.log(4), 10, bytes_per_token=2.0)
    assert s["perplexity"] == pytest.approx(4.0) and s["bits_per_byte"] == pytest.approx(1.0)


def test_uniform_model_has_perplexity_of_the_vocabulary():
    V = 7
    logits = torch.zeros(1, 5, V)
    loss = clm_loss(FixedLogits(logits), None, torch.randint(0, V, (1, 5))).item()
    assert perplexity(loss) == pytest.approx(V)


def test_bigram_by_hand():
    train = np.array([0, 1, 0, 1, 0, 2])  # contexts: 0 -> {1: 2, 2: 1}; 1 -> {0: 2}
    val = np.array([0, 1, 2])
    V, d = 3, 0.5
    uni = np.array([3, 2, 1]) + 1.0
    p_uni = uni / uni.sum()  # (c(w) + 1) / (N + V)
    # P(1|0) = (2 - d)/3 + d * 2/3 * P_uni(1);  P(2|1) = 0 + d * 1/2 * P_uni(2)
    p1 = (2 - d) / 3 + d * 2 / 3 * p_uni[1]
    p2 = d * 1 / 2 * p_uni[2]
    r = bigram_eval(train, val, V, discount=d)
    assert r["loss"] == pytest.approx(-(math.log(p1) + math.log(p2)) / 2)
    assert r["tokens"] == 2


def test_bigram_probabilities_sum_to_one():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 5, 200)
    V = 5
    # score every possible next token after each context: the probabilities must sum to 1
    for v in range(V):
        total = sum(math.exp(-bigram_eval(train, np.array([v, w]), V)["loss"]) for w in range(V))
        assert total == pytest.approx(1.0, abs=1e-9)
