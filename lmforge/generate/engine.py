"""Decoding with a KV cache: one prefill over the prompts, then one-token steps.

The engine works on token ids only. Prompts of different lengths share one batch by left padding
(generate/batch.py).

Every step runs the model on the newest token of each row at cache slot `cache.pos`, reading the
cached keys/values of everything before it, so a step costs the same at token 10 as at token 1,000.
Past the model's context the model reads a sliding window, its last `context_length` tokens, as
the uncached loop (and nanoGPT's) does: each such step re-encodes the window (a prefill, since every
position in it has moved), so the tokens are the same as uncached decoding's at any length; in a
batch, a row that still has padding keeps all its tokens, so each row sees what it would see alone.
n samples per prompt share one prefill: the prompt's cache rows are copied n times.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

import torch
from torch import nn

from lmforge.config import GenerateConfig
from lmforge.generate.batch import PAD, DecodeState, as_rows
from lmforge.generate.beam import beam_search
from lmforge.generate.fast_linear import BACKENDS, SMALL_BATCH, decode_linears
from lmforge.generate.native import NativeDecoder, native_reason
from lmforge.generate.sampling import adjust_logits, check, choose, make_generator

STEPS = ("auto", "native", *BACKENDS)


class Engine:
    """Decoding for one model. cpu_step: how the one-token steps of up to SMALL_BATCH rows run on the
    CPU. "native": the whole step as one compiled function (generate/native.py); "numpy" or "torch":
    the model in PyTorch, its matrix-vector products routed through that library; "auto": native
    where it builds and covers the model, else PyTorch with the measured fastest of NumPy and PyTorch
    for each weight shape (generate/fast_linear.py). The tokens agree to float32 rounding.
    sync_every: steps between checks whether every row has stopped. A check waits for the device, so
    on a GPU the host could not queue the next step while the current one runs; by default the CPU
    checks every step and other devices every 8 (up to 7 steps of padding are then computed and
    dropped after the last row stops; the tokens are the same)."""

    def __init__(self, model: nn.Module, cpu_step: str = "auto", sync_every: int | None = None,
                 gemv: str | None = None):
        cpu_step = gemv or cpu_step  # gemv: the earlier name of cpu_step, when it chose numpy or torch only
        if cpu_step not in STEPS:
            raise ValueError(f"cpu_step must be one of {', '.join(STEPS)}, not {cpu_step!r}")
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be 1 or more, not {sync_every}")
        self.model = model
        self.cpu_step = cpu_step
        self.sync_every = sync_every

    @property
    def gemv(self) -> str:
        return self.cpu_step

    def _native(self, rows: int) -> NativeDecoder | None:
        """The native step for `rows` rows when the choice and the model allow it. With "auto",
        LMFORGE_GEMV=numpy|torch asks for the PyTorch path."""
        auto = self.cpu_step == "auto"
        pytorch_asked = os.environ.get("LMFORGE_GEMV", "").lower() in BACKENDS
        if rows > SMALL_BATCH or not (self.cpu_step == "native" or auto and not pytorch_asked):
            return None
        reason = native_reason(self.model)
        if reason is None:
            try:
                return NativeDecoder(self.model)
            except ValueError as e:
                reason = str(e)
        if not auto:
            raise ValueError(f"cpu_step='native' cannot run here: {reason}")
        return None

    def _routing(self, rows: int, native: NativeDecoder | None):
        """decode_linears for the PyTorch path (nothing when the native step runs)."""
        if native is not None:
            return contextlib.nullcontext()
        return decode_linears(self.model, rows <= SMALL_BATCH, "auto" if self.cpu_step == "native" else self.cpu_step)

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
        rows = as_rows(prompts, model.config.context_length)
        native = self._native(len(rows) * gen.num_samples)
        state = DecodeState(model, rows, native)
        if gen.num_samples > 1:  # each prompt's prefill serves its n samples
            state.select(torch.arange(state.history.size(0), device=state.device).repeat_interleave(gen.num_samples))
        generator = make_generator(gen.seed, state.device)
        stop = torch.tensor(gen.stop_ids, dtype=torch.long, device=state.device)
        done = torch.zeros(state.history.size(0), dtype=torch.bool, device=state.device)
        last = None
        every = self.sync_every or (1 if state.device.type == "cpu" else 8)
        ok = torch.ones_like(done)  # rows that still had a token to choose: read when we read anyway
        with self._routing(state.history.size(0), native):
            for i in range(gen.max_new_tokens):
                if i > 0:
                    state.step(last)
                nxt = choose(adjust_logits(state.logits, state.history, gen), gen, generator, ok)  # (N,)
                if (i + 1) % every == 0 or i + 1 == gen.max_new_tokens:
                    check(ok | done, None)  # a finished row may run out of tokens: it idles anyway
                yield nxt.masked_fill(done, PAD)
                last = torch.where(done, last, nxt) if last is not None else nxt  # finished rows idle
                done |= torch.isin(nxt, stop)
                if stop.numel() and (i + 1) % every == 0 and bool(done.all()):
                    return

    def generate(self, prompts: torch.Tensor | Sequence[Sequence[int]],
                 gen: GenerateConfig = GenerateConfig(), ends=None) -> list[list[int]]:
        """The new tokens of every output row (see `stream` for the order), each ending at its stop
        id if it emitted one. With gen.num_beams > 1, beam search: the best gen.num_samples
        hypotheses of each prompt, best first; `ends(prompt index, new tokens) -> bool` also finishes a hypothesis
        (a caller's stop strings: beams then differ before the stop, not after it)."""
        if gen.num_beams > 1:
            rows = as_rows(prompts, self.model.config.context_length)
            self.model.eval()
            native = self._native(len(rows) * gen.num_beams)
            with self._routing(len(rows) * gen.num_beams, native):
                return beam_search(self.model, rows, gen, native, ends)
        steps = list(self.stream(prompts, gen))  # left on the device: one transfer at the end
        if not steps:
            return [[] for _ in range(len(prompts) * gen.num_samples)]
        return [[t for t in row if t != PAD] for row in torch.stack(steps, 1).tolist()]
