"""Beam search: keep the K most likely continuations of each prompt instead of one.

At each step every live beam is extended by every token, scored by its summed log-probability,

    score(y_1..y_t) = sum_i log p(y_i | prompt, y_<i),

and the best K extensions that do not stop stay live. The repetition penalty and the n-gram ban act
on these log-probabilities (as in transformers), not on the logits before them. An extension that
emits a stop id is a finished hypothesis, ranked by the length-normalised score (Wu et al. 2016,
simplified)

    score / t ** length_penalty          (length_penalty > 0 favours longer hypotheses).

With early_stopping a prompt is done once K hypotheses have finished; without it, once no live beam
can still beat the worst kept hypothesis (its score / t ** length_penalty is the bound used). Beams
still live after max_new_tokens are ranked the same way.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from lmforge.config import GenerateConfig
from lmforge.generate.sampling import adjust_logits, ruled_out_error
from lmforge.generate.seq2seq import start_state


class Hypotheses:
    """The finished hypotheses of one prompt, the best `k` kept."""

    def __init__(self, k: int, length_penalty: float):
        self.k, self.alpha = k, length_penalty
        self.items: list[tuple[float, list[int]]] = []

    def normalised(self, score: float, length: int) -> float:
        """score / length ** length_penalty, in log space so that no finite penalty overflows."""
        if score == 0 or math.isinf(score):
            return score
        return math.copysign(math.exp(min(math.log(abs(score)) - self.alpha * math.log(length), 700.0)), score)

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((self.normalised(score, len(tokens)), tokens))
        self.items.sort(key=lambda item: -item[0])
        del self.items[self.k:]

    def full(self) -> bool:
        return len(self.items) >= self.k

    def cannot_improve(self, best_live: float, length: int) -> bool:
        return self.full() and self.items[-1][0] >= self.normalised(best_live, length)


def _extend(found: Hypotheses, base: int, top: list[float], idx: list[int], V: int, K: int,
            finishes: Callable[[int, int], bool], record: Callable[[int], list[int]]) -> list[tuple[int, int, float]]:
    """One prompt's step: its ranked candidates (summed scores `top`, flat indices `idx` over its K
    beams x V tokens, whose rows start at `base`) -> the K that stay live as (row, token, score).
    A candidate that finishes (finishes(row, token)) among the first K becomes a hypothesis
    (record(row): the beam's tokens so far)."""
    live: list[tuple[int, int, float]] = []
    for rank, (s, i) in enumerate(zip(top, idx)):
        row, t = base + i // V, i % V
        if s == float("-inf") or len(live) == K:
            break
        if finishes(row, t):
            if rank < K:
                found.add(s, record(row) + [t])
        else:
            live.append((row, t, s))
    return live + [(base, 0, float("-inf"))] * (K - len(live))  # a prompt with too few candidates


@torch.no_grad()
def beam_search(model: nn.Module, rows: list[list[int]], gen: GenerateConfig, native=None,
                ends: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """The best gen.num_samples hypotheses of each prompt in `rows`, best first, as new-token lists.
    native: a NativeDecoder for the one-token steps (see DecodeState); an encoder-decoder model's rows
    are its sources. ends(prompt index, new tokens): whether an extension also finishes its
    hypothesis, like a stop id (the caller's stop strings). A prompt that is done leaves the batch:
    the steps after it run on the other prompts' beams only (a batch's rows finish at different
    lengths, and their steps cost nothing more)."""
    model.eval()
    K, B, n = gen.num_beams, len(rows), gen.num_samples
    state = start_state(model, rows, native, reserve=gen.max_new_tokens)
    device = state.device
    state.select(torch.arange(B, device=device).repeat_interleave(K))  # row a*K + k is beam k of prompt active[a]
    active = list(range(B))  # the prompts still being searched
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 1
    tokens = torch.empty(B * K, 0, dtype=torch.long, device=device)  # the new tokens of each beam
    found = [Hypotheses(K, gen.length_penalty) for _ in range(B)]
    stop = set(gen.stop_ids)
    pool = max(2, 1 + len(stop)) * K  # candidates per prompt: K stay live even if every stop id is among them
    for step in range(gen.max_new_tokens):
        logp = adjust_logits(torch.log_softmax(state.logits.float(), dim=-1), state.history, gen)  # (A*K, V)
        logp.masked_fill_(logp[:, :1].isnan(), float("-inf"))  # every token ruled out: a NaN row (one column tells)
        V = logp.size(-1)
        top, idx = (scores.reshape(-1, 1) + logp).view(len(active), K * V).topk(min(pool, K * V), dim=1)
        so_far = tokens.tolist() if ends else None
        last = step + 1 == gen.max_new_tokens
        keep, going = [], []
        for a, (b, top_b, idx_b) in enumerate(zip(active, top.tolist(), idx.tolist())):  # two transfers a step
            if top_b[0] == float("-inf"):  # no beam of this prompt can go on
                raise ruled_out_error()
            live = _extend(found[b], a * K, top_b, idx_b, V, K,
                           lambda row, t: t in stop or (ends is not None and ends(b, so_far[row] + [t])),
                           lambda row: tokens[row].tolist())
            if found[b].full() and not last and (gen.early_stopping or found[b].cannot_improve(live[0][2], step + 1)):
                continue  # done: its beams leave the batch
            keep += live
            going.append(b)
        active = going
        if not going:
            break
        rows_t = torch.tensor([row for row, _, _ in keep], device=device)
        tok_t = torch.tensor([t for _, t, _ in keep], device=device)
        scores = torch.tensor([s for _, _, s in keep], device=device).view(len(going), K)
        tokens = torch.cat([tokens[rows_t], tok_t.unsqueeze(1)], dim=1)
        if not last:
            state.select(rows_t)
            state.step(tok_t)
    if tokens.size(1):  # beams still live at the end compete with the finished ones
        for a, b in enumerate(active):
            for s, row in zip(scores[a].tolist(), tokens[a * K:(a + 1) * K].tolist()):
                if s > float("-inf"):
                    found[b].add(s, row)
    best = [[t for _, t in found[b].items[:n]] for b in range(B)]
    return [row for b in range(B) for row in best[b] + [[]] * (n - len(best[b]))]
