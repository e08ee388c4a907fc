"""Decoding with a KV cache: one prefill over the prompts, then one-token steps.
An encoder-decoder model's prompts are its sources: they are encoded once and the decoder steps
from its start token (generate/seq2seq.py); everything below holds for its decoder the same way.

The engine works on token ids only. Prompts of different lengths share one batch by left padding
(generate/batch.py).

Every step runs the model on the newest token of each row at cache slot `cache.pos`, reading the
cached keys/values of everything before it, so a step costs the same at token 10 as at token 1,000.
Past the model's context the model reads a sliding window, its last `context_length` tokens, as
the uncached loop (and nanoGPT's) does: each such step re-encodes the window (a prefill, since every
position in it has moved), so the tokens are the same as uncached decoding's at any length; in a
batch, a row that still has padding keeps all its tokens, so each row sees what it would see alone.
n samples per prompt share one prefill: the prompt's cache rows are copied n times. The cache holds
the prompt and the new tokens (never the whole context when less is asked for), and a request that
would not fit in memory is refused before anything is allocated (generate/limits.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Sequence

import torch
from torch import nn

from lmforge.config import GenerateConfig
from lmforge.errors import LmforgeError
from lmforge.generate.backend import LEGACY, choose, shared_history_unavailable
from lmforge.generate.batch import PAD, DecodeState, as_rows
from lmforge.generate.beam import beam_search
from lmforge.generate.cpu import MAX_ROWS, NativeDecoder, coverage, library
from lmforge.generate.fast_linear import SMALL_BATCH, LinearRoutes
from lmforge.generate.limits import check_fits
from lmforge.generate.seq2seq import Seq2SeqState, is_seq2seq, max_target, start_state
from lmforge.generate.sampling import adjust_logits, check, choose as choose_token, make_generator


class Engine:
    """Decoding for one model. backend: how the one-token steps run (generate/backend.py): "native",
    the whole step as one compiled C function; "torch", the model in PyTorch (on the CPU, its
    matrix-vector products through the measured fastest of NumPy and PyTorch for each weight shape,
    or through the library `gemv` names); "auto", native where it builds and covers the model, else
    torch. It is chosen here, once: `backend` and `backend_reason` say which and why. A call that the
    native step does not fit (more than 16 rows, or a model changed since into one it does not cover)
    runs in PyTorch. The tokens agree to float32 rounding.
    sync_every: steps between checks whether every row has stopped. A check waits for the device, so
    on a GPU the host could not queue the next step while the current one runs; by default the CPU
    checks every step and other devices every 8 (up to 7 steps of padding are then computed and
    dropped after the last row stops; the tokens are the same).
    cpu_step: the earlier name of backend, when "numpy" or "torch" named the PyTorch path's library."""

    def __init__(self, model: nn.Module, backend: str = "auto", sync_every: int | None = None,
                 gemv: str = "auto", *, cpu_step: str | None = None):
        backend = cpu_step or backend
        if backend in LEGACY:  # "torch" / "numpy" as cpu_step named: PyTorch with that library's products
            backend, gemv = "torch", LEGACY[backend] if gemv == "auto" else gemv
        if sync_every is not None and sync_every < 1:
            raise ValueError(f"sync_every must be 1 or more, not {sync_every}")
        self.model = model
        self.requested = backend
        self.sync_every = sync_every
        choice = choose(model, backend, gemv)
        self.backend, self.backend_reason, self.gemv = choice.backend, choice.reason, choice.gemv

    def _native(self, rows: int):
        """The native step for a call of `rows` rows, when the engine runs native and it fits: a
        NativeDecoder, or for an encoder-decoder the compiled library its beams' attention calls."""
        if self.backend != "native" or (rows > MAX_ROWS and not is_seq2seq(self.model)):
            return None
        if is_seq2seq(self.model):
            reason = shared_history_unavailable(self.model)  # the model may have moved since the engine chose
            if reason is None:
                return library()
        else:
            reason = coverage(self.model)  # the model may have changed since the engine chose
            if reason is None:
                try:
                    return NativeDecoder(self.model)
                except ValueError as e:
                    reason = str(e)
        if self.requested == "native":
            raise LmforgeError(f"backend='native' cannot run here: {reason}; use backend='auto' or 'torch'")
        return None

    def _routes(self, rows: int, native: NativeDecoder | None):
        """`.active()` around each step: the PyTorch path's product routing (nothing when native)."""
        if isinstance(native, NativeDecoder) or rows > SMALL_BATCH:
            return _NoRoutes
        return LinearRoutes(self.model, self.gemv)

    def _prefill_routes(self, rows: list[list[int]]):
        """`.active()` around the prefill: a prompt of at most MAX_ROWS tokens in all has its integer
        weights' products computed by the compiled kernel, reading the integers as the steps do; a
        longer one is faster through dequantised tiles and PyTorch's matrix product."""
        if len(rows) * max(map(len, rows)) > MAX_ROWS or library() is None:
            return _NoRoutes
        return LinearRoutes(self.model, self.gemv, floats=False)

    def _prepare(self, prompts, gen: GenerateConfig) -> tuple[list[list[int]], GenerateConfig]:
        """The prompts as rows, the model in eval mode, and the request checked against free memory.
        An encoder-decoder model's prompts are its sources; its output ends where the decoder's
        positions do (max_new_tokens is capped there)."""
        model = self.model.eval()
        rows = as_rows(prompts, model.config.context_length)
        if is_seq2seq(model) and gen.max_new_tokens > max_target(model):
            gen = dataclasses.replace(gen, max_new_tokens=max_target(model))
        per_prompt = gen.num_beams if gen.num_beams > 1 else gen.num_samples
        check_fits(model, len(rows), max(map(len, rows)), gen.max_new_tokens, per_prompt, gen.num_beams > 1)
        return rows, gen

    @torch.no_grad()
    def stream(self, prompts: torch.Tensor | Sequence[Sequence[int]],
               gen: GenerateConfig = GenerateConfig()) -> Iterator[torch.Tensor]:
        """Yield the next token of every output row, (N,) with N = prompts x gen.num_samples (the
        samples of prompt b are rows b*n .. b*n + n - 1), up to gen.max_new_tokens times. A row that
        has emitted a stop id yields PAD (-1) from then on; the stream ends once every row has."""
        if gen.num_beams > 1:
            raise ValueError("beam search keeps several candidates until the end, so it cannot stream; "
                             "use generate() or drop the beams")
        rows, gen = self._prepare(prompts, gen)
        n = len(rows) * gen.num_samples
        native = self._native(n)
        routes = self._routes(n, native)
        with self._prefill_routes(rows).active():
            state = start_state(self.model, rows, native, reserve=gen.max_new_tokens)
        if gen.num_samples > 1:  # each prompt's prefill serves its n samples
            state.select(torch.arange(state.history.size(0), device=state.device).repeat_interleave(gen.num_samples))
        yield from self._decode(state, gen, routes)

    def _decode(self, state: DecodeState | Seq2SeqState, gen: GenerateConfig, routes) -> Iterator[torch.Tensor]:
        generator = make_generator(gen.seed, state.device)
        stop = torch.tensor(gen.stop_ids, dtype=torch.long, device=state.device)
        done = torch.zeros(state.history.size(0), dtype=torch.bool, device=state.device)
        last = None
        every = self.sync_every or (1 if state.device.type == "cpu" else 8)
        ok = torch.ones_like(done)  # rows that still had a token to choose: read when we read anyway
        for i in range(gen.max_new_tokens):
            if i > 0:
                with routes.active():  # only around the step: a paused stream leaves nothing changed
                    state.step(last)
            nxt = choose_token(adjust_logits(state.logits, state.history, gen), gen, generator, ok)  # (N,)
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
            rows, gen = self._prepare(prompts, gen)
            native = self._native(len(rows) * gen.num_beams)
            with self._routes(len(rows) * gen.num_beams, native).active():
                return beam_search(self.model, rows, gen, native, ends)
        steps = list(self.stream(prompts, gen))  # left on the device: one transfer at the end
        if not steps:
            return [[] for _ in range(len(prompts) * gen.num_samples)]
        return [[t for t in row if t != PAD] for row in torch.stack(steps, 1).tolist()]

    def __repr__(self) -> str:
        return f"Engine(backend={self.backend!r}: {self.backend_reason})"


class _NoRoutes:
    @staticmethod
    def active():
        return contextlib.nullcontext()
