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


@torch.no_grad()
def beam_search(model: nn.Module, rows: list[list[int]], gen: GenerateConfig, native=None,
                ends: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """The best gen.num_samples hypotheses of each prompt in `rows`, best first, as new-token lists.
    native: a NativeDecoder for the one-token steps (see DecodeState); an encoder-decoder model's rows are its sources. ends(prompt index, new
    tokens): whether an extension also finishes its hypothesis, like a stop id (the caller's stop strings)."""
    model.eval()
    K, B, n = gen.num_beams, len(rows), gen.num_samples
    state = start_state(model, rows, native, reserve=gen.max_new_tokens)
    device = state.device
    state.select(torch.arange(B, device=device).repeat_interleave(K))  # row b*K + k is beam k of prompt b
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 1
    tokens = torch.empty(B * K, 0, dtype=torch.long, device=device)  # the new tokens of each beam
    found = [Hypotheses(K, gen.length_penalty) for _ in range(B)]
    done = [False] * B
    stop = set(gen.stop_ids)
    pool = max(2, 1 + len(stop)) * K  # candidates per prompt: K stay live even if every stop id is among them
    for step in range(gen.max_new_tokens):
        logp = adjust_logits(torch.log_softmax(state.logits.float(), dim=-1), state.history, gen)  # (B*K, V)
        logp.masked_fill_(logp[:, :1].isnan(), float("-inf"))  # every token ruled out: a NaN row (one column tells)
        V = logp.size(-1)
        cand = (scores.reshape(-1, 1) + logp).view(B, K * V)
        top, idx = cand.topk(min(pool, K * V), dim=1)
        keep_rows, keep_tok, keep_score = [], [], []
        so_far = tokens.tolist() if ends else None
        top_l, idx_l = top.tolist(), idx.tolist()  # two transfers a step, not two per prompt
        for b in range(B):
            if not done[b] and top_l[b][0] == float("-inf"):  # no beam of this prompt can go on
                raise ruled_out_error()
            live = []
            for rank, (s, i) in enumerate(zip(top_l[b], idx_l[b])):
                row, t = b * K + i // V, i % V
                if s == float("-inf") or len(live) == K:
                    break
                if t in stop or (ends is not None and ends(b, so_far[row] + [t])):
                    if rank < K and not done[b]:
                        found[b].add(s, tokens[row].tolist() + [t])
                else:
                    live.append((row, t, s))
            live += [(b * K, 0, float("-inf"))] * (K - len(live))  # a prompt with too few candidates
            if not done[b] and found[b].full() and step + 1 < gen.max_new_tokens:  # else the live compete below
                done[b] = gen.early_stopping or found[b].cannot_improve(live[0][2], step + 1)
            for row, t, s in live:
                keep_rows.append(row), keep_tok.append(t), keep_score.append(s if not done[b] else float("-inf"))
        if all(done):
            break
        rows_t = torch.tensor(keep_rows, device=device)
        tok_t = torch.tensor(keep_tok, device=device)
        scores = torch.tensor(keep_score, device=device).view(B, K)
        tokens = torch.cat([tokens[rows_t], tok_t.unsqueeze(1)], dim=1)
        if step + 1 < gen.max_new_tokens:
            state.select(rows_t)
            state.step(tok_t)
    for b in range(B):  # beams still live at the end compete with the finished ones
        for k in range(K):
            s = float(scores[b, k])
            if not done[b] and s > float("-inf") and tokens.size(1):
                found[b].add(s, tokens[b * K + k].tolist())
    best = [[t for _, t in found[b].items[:n]] for b in range(B)]
    return [row for b in range(B) for row in best[b] + [[]] * (n - len(best[b]))]
