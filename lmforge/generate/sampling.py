"""Choosing the next token from the logits.

    greedy:       x_t = argmax_v logits_v
    temperature:  p = softmax(logits / tau)              tau < 1 sharpens, tau > 1 flattens
    top-k:        keep the k largest logits, renormalise
    top-p:        keep the smallest set of tokens whose probabilities sum to >= p (nucleus), renormalise
    min-p:        keep tokens with p_v >= min_p * max_u p_u (the bar moves with the model's confidence)
    repetition penalty (Keskar et al. 2019, CTRL): for every token already in the text,
                  logit / r if the logit is positive, logit * r if not (r > 1 discourages repeats)
    no-repeat n-gram: a token that would complete an n-gram already in the text gets -inf
    the draw:     x_t = the first v with F_v > u F_V,  F_v = p_1 + ... + p_v,  u ~ Uniform[0, 1)
                  (inverse-CDF sampling: one random number per row, and a token of probability 0
                  can never be drawn, because F does not rise at it)

Histories are (N, L) token tensors with -1 at left padding. A `torch.Generator` seeds the draws,
so the same seed gives the same text.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import GenerateConfig
from lmforge.errors import LmforgeError


def process_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, min_p: float | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, V) logits with the filtered-out tokens at -inf, divided by temperature."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before this token already >= p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    if min_p is not None and min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    return logits


def seen_tokens(history: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(N, L) history with -1 at padding -> (N, V) bool, True for every token that occurs."""
    seen = torch.zeros(history.size(0), vocab_size + 1, dtype=torch.bool, device=history.device)
    return seen.scatter(1, history + 1, True)[:, 1:]  # padding lands in column 0, which is dropped


def penalize_repeats(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty over the tokens of `history` (N, L)."""
    if penalty == 1.0:
        return logits
    seen = seen_tokens(history, logits.size(1))
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def block_repeated_ngrams(logits: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """-inf for every token that would end an n-gram already in `history` (N, L)."""
    if n <= 0 or history.size(1) < n:
        return logits
    if n == 1:
        return logits.masked_fill(seen_tokens(history, logits.size(1)), float("-inf"))
    grams = history.unfold(1, n, 1)  # (N, L - n + 1, n): every n-gram in the text
    prefix = history[:, -(n - 1):].unsqueeze(1)  # (N, 1, n - 1): the last n - 1 tokens
    hit = (grams[..., :-1] == prefix).all(-1) & (prefix >= 0).all(-1)  # (N, W)
    rows, where = hit.nonzero(as_tuple=True)
    logits = logits.clone()
    logits[rows, grams[rows, where, -1]] = float("-inf")
    return logits


def adjust_logits(logits: torch.Tensor, history: torch.Tensor, gen: GenerateConfig) -> torch.Tensor:
    """The penalties that look at the text so far (both sampling and beam search use them)."""
    logits = penalize_repeats(logits.float(), history, gen.repetition_penalty)
    return block_repeated_ngrams(logits, history, gen.no_repeat_ngram_size)


def choose(logits: torch.Tensor, gen: GenerateConfig, generator: torch.Generator | None = None,
           ok: torch.Tensor | None = None) -> torch.Tensor:
    """(N, V) adjusted logits -> (N,) token ids; temperature 0 is greedy. A row with every token
    ruled out is an error (see `check`)."""
    if gen.temperature <= 0:
        best, ids = logits.max(dim=-1)
        check(best > float("-inf"), ok)  # -inf everywhere, or a NaN (max propagates it)
        return ids
    probs = torch.softmax(process_logits(logits, gen.temperature, gen.top_k, gen.top_p, gen.min_p), dim=-1)
    u = torch.rand(probs.size(0), 1, generator=generator, device=probs.device)
    return draw(probs, u, ok)


def draw(probs: torch.Tensor, u: torch.Tensor, ok: torch.Tensor | None = None) -> torch.Tensor:
    """(N, V) probabilities, (N, 1) uniforms in [0, 1) -> (N,) the first v with F_v > u F_V (see the
    module's docstring). The same distribution torch.multinomial draws from, from one random number
    per row instead of one per token of the vocabulary (on a CPU, 8 rows of 8,192 tokens take
    tens of microseconds instead of over a millisecond)."""
    cdf = probs.cumsum(-1)  # (N, V), F
    total = cdf[:, -1:]
    check(total.squeeze(1) > 0, ok)  # 0, or NaN from a row whose every logit is -inf
    below = torch.nextafter(total, torch.zeros_like(total))  # u F_V can round up to F_V: stay under it
    ids = torch.searchsorted(cdf, torch.minimum(u * total, below), right=True).squeeze(1)
    return ids.clamp_(max=probs.size(-1) - 1)  # a ruled-out row (NaN) gives V: still a valid id until checked


def check(rows_ok: torch.Tensor, ok: torch.Tensor | None) -> None:
    """Raise now if a row has no token left; or, given `ok`, only note it there (ok &= rows_ok, on the
    device): reading a GPU tensor waits for the GPU, so a decoding loop checks `ok` when it reads
    anyway."""
    if ok is not None:
        ok &= rows_ok
    elif not bool(rows_ok.all()):
        raise ruled_out_error()


def ruled_out_error() -> LmforgeError:
    return LmforgeError("every token was ruled out for a row (no-repeat n-grams, penalties or filters left nothing, "
                        "or the model gave NaN); loosen --no-repeat-ngram-size or the filters")


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def generate(model: nn.Module, ids: torch.Tensor, gen: GenerateConfig) -> list[list[int]]:
    """The reference loop the engine is tested against: re-read the last `context_length` tokens of
    `ids` (B, T) at every step, no cache. Returns each row's new tokens, ending at a stop id."""
    model.eval()
    context = model.config.context_length
    generator = make_generator(gen.seed, ids.device)
    out: list[list[int]] = [[] for _ in range(ids.size(0))]
    done = [False] * ids.size(0)
    for _ in range(gen.max_new_tokens):
        logits = model(ids[:, -context:])[:, -1, :]  # (B, V)
        nxt = choose(adjust_logits(logits, ids, gen), gen, generator)
        for r, t in enumerate(nxt.tolist()):
            if not done[r]:
                out[r].append(t)
                done[r] = t in gen.stop_ids
        if all(done):
            break
        ids = torch.cat([ids, nxt.unsqueeze(1)], dim=1)
    return out
