"""Perplexity and bits per byte of a causal LM on a token array.

    loss       = -(1/N) sum_t ln P(x_t | x_<t)        mean negative log-likelihood, nats per token
    perplexity = exp(loss)                           the effective number of equally likely choices
    bits/byte  = sum_t -ln P(x_t | x_<t) / (ln 2 * bytes)

Perplexity depends on the tokenizer (a bigger vocabulary makes each token harder and the sequence
shorter); bits per byte divides by the UTF-8 size of the text, so it compares across tokenizers.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from lmforge.data.batches import eval_windows
from lmforge.objectives.clm import clm_eval


def perplexity(mean_nll: float) -> float:
    return math.exp(min(mean_nll, 700.0))  # exp overflows a float past ~709


def bits_per_byte(total_nll: float, n_bytes: float) -> float:
    return total_nll / (math.log(2) * n_bytes)


def summarize(total_nll: float, n_tokens: int, bytes_per_token: float | None = None) -> dict:
    mean = total_nll / max(1, n_tokens)
    out = {"loss": mean, "perplexity": perplexity(mean), "tokens": n_tokens}
    if bytes_per_token:
        out["bits_per_byte"] = bits_per_byte(total_nll, n_tokens * bytes_per_token)
    return out


def evaluate_lm(model: nn.Module, tokens: np.ndarray, context: int, batch_size: int = 8,
                max_batches: int | None = None, bytes_per_token: float | None = None, autocast=None) -> dict:
    """Score `tokens` in non-overlapping windows of `context` (all of them unless `max_batches`)."""
    total, n = clm_eval(model, eval_windows(tokens, batch_size, context, max_batches), autocast)
    return summarize(total, n, bytes_per_token)
