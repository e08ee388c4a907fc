"""Decoding with a KV cache: one prefill over the prompts, then one-token steps.

The engine works on token ids only. Prompts of different lengths share one batch by left padding
(generate/batch.py).

Every step runs the model on the newest token of each row at cache slot `cache.pos`, reading the
cached keys/values of everything before it, so a step costs the same at token 10 as at token 1,000.
When the cache reaches the model's context, the engine keeps the last half of the context of each
row, prefills it again and goes on (a sliding window that re-encodes only every context/2 tokens).
n samples per prompt share one prefill: the prompt's cache rows are copied n times.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from lmforge.config import GenerateConfig
from lmforge.generate.batch import PAD, DecodeState, as_rows
from lmforge.generate.beam import beam_search
from lmforge.generate.fast_linear import SMALL_BATCH, check_choice, decode_linears
from lmforge.generate.sampling import adjust_logits, choose, make_generator

class Engine:
    """Decoding for one model. gemv: how decode steps multiply by the weights on the CPU: "auto"
    measures PyTorch and NumPy on both weight layouts once per model and keeps the fastest per
    weight shape; "torch" or "numpy" routes every weight one way (see generate/fast_linear.py).
    sync_every: steps between checks whether every row has stopped. A check waits for the device, so
    on a GPU the host could not queue the next step while the current one runs; by default the CPU
    checks every step and other devices every 8 (up to 7 steps of padding are then computed and
    dropped after the last row stops; the tokens are the same)."""

    def __init__(self, model: nn.Module, gemv: str = "auto", sync_every: int | None = None):
        check_choice(gemv)
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be 1 or more, not {sync_every}")
        self.model = model
        self.gemv = gemv
        self.sync_every = sync_every

    @torch.no_grad()
    def stream(self, prompts: torch.Tensor | Sequence[Sequence[int]],
               gen: GenerateConfig = GenerateConfig()) -> Iterator[torch.Tensor]:
        """Yield the next token of every output row, (N,) with N = prompts x gen.num_samples (the
        samples of prompt b are rows b*n .. b*n + n - 1), up to gen.max_new_tokens times. A row that
        has emitted a stop id yields PAD (-1) from then on; the stream ends once every row has."""
        if gen.num_beams > 1:
            raise ValueError("beam search keeps several candidates until the end, so it cannot stream; "
                             "use generate() or drop the beams")
        model = self.model.eval()
        state = DecodeState(model, as_rows(prompts, model.config.context_length))
        if gen.num_samples > 1:  # each prompt's prefill serves its n samples
            state.select(torch.arange(state.history.size(0), device=state.device).repeat_interleave(gen.num_samples))
        generator = make_generator(gen.seed, state.device)
        stop = torch.tensor(gen.stop_ids, dtype=torch.long, device=state.device)
        done = torch.zeros(state.history.size(0), dtype=torch.bool, device=state.device)
        last = None
        every = self.sync_every or (1 if state.device.type == "cpu" else 8)
        with decode_linears(model, state.history.size(0) <= SMALL_BATCH, self.gemv):
            for i in range(gen.max_new_tokens):
                if i > 0:
                    state.step(last)
                nxt = choose(adjust_logits(state.logits, state.history, gen), gen, generator)  # (N,)
                yield nxt.masked_fill(done, PAD)
                last = torch.where(done, last, nxt) if last is not None else nxt  # finished rows idle
                done |= torch.isin(nxt, stop)
                if stop.numel() and (i + 1) % every == 0 and bool(done.all()):
                    return

    def generate(self, prompts: torch.Tensor | Sequence[Sequence[int]],
                 gen: GenerateConfig = GenerateConfig()) -> list[list[int]]:
        """The new tokens of every output row (see `stream` for the order), each ending at its stop
        id if it emitted one. With gen.num_beams > 1, beam search: the best gen.num_samples
        hypotheses of each prompt, best first."""
        if gen.num_beams > 1:
            return beam_search(self.model, as_rows(prompts, self.model.config.context_length), gen)
        steps = list(self.stream(prompts, gen))  # left on the device: one transfer at the end
        if not steps:
            return [[] for _ in range(len(prompts) * gen.num_samples)]
        return [[t for t in row if t != PAD] for row in torch.stack(steps, 1).tolist()]
