"""Continuous batching: one model, one decoding loop, requests joining and leaving at any step.

A server decoding one request at a time reads every weight once per token per request; decoding
a batch reads them once per token for all of it. But requests arrive and finish at different times:
a static batch waits for its slowest row while new requests queue. Here (as vLLM's scheduler does)
the batch changes between steps:

    step t:    rows A B C decode one token each
    between:   C emitted its stop token: it leaves; D arrived: its prompt is prefilled alone,
               then it joins, its newest token aligned with the others' (left padding)
    step t+1:  rows A B D decode one token each

Each request keeps its own settings (temperature, top-k / top-p / min-p, penalties, stop ids,
max_new_tokens) and its own random generator, so a seeded request draws the same tokens however
the batch around it changes. A cancelled request (its client went away) leaves at the next step.
The queue is bounded: `submit` refuses a request when `max_queue` are already waiting.

By default the loop runs on a thread of its own, started by the first `submit`. With
`Scheduler(..., thread=False)` the caller runs it: `run()` until `stop()`, or one `tick()` at a time
(each: admit who fits, then one token for every running request); `trace` (a list) records per tick
who joined and who got a token (docs/chat-and-serving.md draws three requests' timeline from it).

Which thread decodes matters on a CPU. OpenMP (PyTorch's and the compiled step's threads) keeps a
pool of worker threads per calling thread, and when the pools together hold more threads than there
are cores, libgomp stops letting idle workers spin, so every parallel region waits for sleeping
workers to wake: once the main thread has run PyTorch (loading the model), a second thread's
decoding was 3x slower on a 2-core machine (a 1 x 384 by 384 x 1536 product: 21 us from the main
thread, 117 us from another; decoding the bench's GPT: 650 vs 215 tokens/s). So `lmforge serve`
decodes in the main thread, where the model was loaded, and answers HTTP on a second one.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from lmforge.config import GenerateConfig
from lmforge.errors import LmforgeError
from lmforge.generate.batch import DecodeState
from lmforge.generate.cpu import MAX_ROWS, NativeDecoder
from lmforge.generate.sampling import adjust_logits, check, choose, make_generator

END = None  # what a request's token queue yields last


def log_probs(logits: torch.Tensor, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """log p(token) under softmax(logits) (V,), and the k likeliest tokens with theirs."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    top = lp.topk(k) if k else None
    return float(lp[token]), ([] if top is None else list(zip(top.indices.tolist(), top.values.tolist())))


class QueueFull(LmforgeError):
    """The scheduler's queue holds max_queue requests already (a server answers 429)."""


@dataclass(eq=False)
class Request:
    """One prompt being decoded: read `tokens` (or iterate) for its new token ids as they come."""

    prompt: list[int]
    gen: GenerateConfig
    tokens: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    produced: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (a stop id), "length" (max_new_tokens), "cancelled", "error"
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)

    listener: object = None  # called with each token id, then END, from the decoding thread (a server's wake-up)
    top_logprobs: int | None = None  # None: none; k >= 0: each token's log-probability and the k likeliest ones
    logprobs: list = field(default_factory=list)  # per token: (its log p, [(id, log p) of the top k])
    id: int = 0  # the order it was submitted in (0, 1, ...)

    def __post_init__(self) -> None:
        self.generator = make_generator(self.gen.seed, torch.device("cpu"))

    def _emit(self, item) -> None:
        self.tokens.put(item)
        if self.listener is not None:
            self.listener(item)

    def __iter__(self):
        while (t := self.tokens.get()) is not END:
            yield t
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled.set()

    def result(self, timeout: float | None = None) -> list[int]:
        if not self.done.wait(timeout):
            raise TimeoutError("the request did not finish in time")
        if self.error is not None:
            raise self.error
        return self.produced

    def _finish(self, reason: str, error: BaseException | None = None) -> None:
        self.finish_reason, self.error = reason, error
        self.done.set()
        self._emit(END)


class Scheduler:
    """The decoding loop of `model` (eval mode, causal): `submit` from any thread, one background
    thread decodes. max_batch: rows decoding at once; max_queue: requests waiting beyond them."""

    def __init__(self, model: nn.Module, max_batch: int = 16, max_queue: int = 256, native=None,
                 thread: bool = True, wake: threading.Event | None = None):
        self.model = model.eval()
        self.thread = thread  # False: the caller runs the loop with tick()
        self.trace: list | None = None  # a list: each tick appends ([ids that joined], [ids that got a token])
        self.after_tick = None  # called (no arguments) from the decoding thread after each tick's tokens went out
        self.submitted = 0
        self.max_batch, self.max_queue = max_batch, max_queue
        self.native = native  # a NativeDecoder for batches of up to MAX_ROWS rows, or None
        self.context = model.config.context_length
        self.device = next(model.parameters()).device
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.running: list[Request] = []
        self.state: DecodeState | None = None
        self.steps = 0  # decode steps run (for /metrics)
        self._wake = wake or threading.Event()  # shared by schedulers one caller's loop ticks together
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- the front --------------------------------------------------------------------------------
    def submit(self, prompt: list[int], gen: GenerateConfig, listener=None, top_logprobs: int | None = None) -> Request:
        """Queue a prompt; its max_new_tokens is capped where the context ends. Raises QueueFull.
        listener(token id or END): called from the decoding thread as tokens come. top_logprobs: record
        each token's log-probability and the k likeliest tokens' (k = top_logprobs)."""
        if not prompt or len(prompt) >= self.context:
            raise LmforgeError(f"the prompt is {len(prompt)} tokens; the model's context of {self.context} leaves no "
                               "room for a reply" if prompt else "the prompt is empty")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise LmforgeError(f"the prompt holds a token id outside the vocabulary of {vocab}")
        cap = self.context - len(prompt)
        if gen.max_new_tokens > cap:
            gen = dataclasses.replace(gen, max_new_tokens=cap)
        with self._lock:
            if self.waiting.qsize() >= self.max_queue:
                raise QueueFull(f"the server's queue holds {self.max_queue} requests already; try again shortly")
            request = Request(list(prompt), gen, listener=listener, top_logprobs=top_logprobs, id=self.submitted)
            self.submitted += 1
            self.waiting.put(request)
        if self.thread:
            self.start()
        self._wake.set()
        return request

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self.run, name="lmforge-scheduler", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def queue_length(self) -> int:
        return self.waiting.qsize()

    @property
    def batch_size(self) -> int:
        return len(self.running)

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Decode until `stop()`, in the calling thread (with thread=False; otherwise the own thread's)."""
        try:
            while not self._stop.is_set():
                if not self.tick():
                    self._wake.wait(0.05)
                    self._wake.clear()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Stopped (or interrupted): no request is left waiting for tokens that will not come."""
        gone = LmforgeError("the server stopped before this request finished")
        for r in self.running + self._drain():
            r._finish("error", gone)
        self.running, self.state = [], None
        if self.after_tick is not None:
            self.after_tick()

    def _drain(self) -> list[Request]:
        taken = []
        while True:
            try:
                taken.append(self.waiting.get_nowait())
            except queue.Empty:
                return taken

    def tick(self) -> bool:
        """Admit the waiting requests that fit, then give every running request its next token.
        False when there was nothing to decode. A failure ends the requests in flight, not the loop."""
        try:
            return self._tick()
        finally:
            if self.after_tick is not None:
                self.after_tick()

    def _tick(self) -> bool:
        try:
            with torch.no_grad():
                joined = self._admit()
                if self.trace is not None:
                    self.trace.append(([r.id for r in joined], [r.id for r in self.running]))
                if not self.running:
                    return False
                self._step()
        except Exception as e:  # noqa: BLE001
            for r in self.running:
                r._finish("error", e)
            self.running, self.state = [], None
        return True

    def _admit(self) -> list[Request]:
        """Prefill the waiting requests that fit (together) and let them join the batch; returns them."""
        joining = []
        while len(self.running) + len(joining) < self.max_batch:
            try:
                r = self.waiting.get_nowait()
            except queue.Empty:
                break
            if r.cancelled.is_set():
                r._finish("cancelled")
            else:
                joining.append(r)
        if not joining:
            return joining
        new = DecodeState(self.model, [r.prompt for r in joining], reserve=self._reserve(joining))
        if self.state is None:
            self.state = new
        else:
            self.state.join(new, self._reserve(self.running + joining))
        self.running += joining
        return joining

    def _reserve(self, requests: list[Request]) -> int:
        return max(r.gen.max_new_tokens - len(r.produced) for r in requests)

    def _choose(self) -> list[int]:
        """Each running row's next token by its own settings. Greedy rows with no penalty to apply
        share one argmax (one operation instead of a few per row: 32 rows save about a millisecond a
        step on a CPU); the others choose one by one, each with its own generator."""
        state, rows = self.state, self.running
        plain = [i for i, r in enumerate(rows) if r.gen.temperature <= 0 and r.gen.repetition_penalty == 1.0
                 and r.gen.no_repeat_ngram_size <= 0]
        tokens = [0] * len(rows)
        if plain:
            best, ids = state.logits[torch.tensor(plain, device=self.device)].float().max(dim=-1)
            check(best > float("-inf"), None)  # a NaN row
            for i, t in zip(plain, ids.tolist()):
                tokens[i] = t
        for i in sorted(set(range(len(rows))) - set(plain)):
            logits = adjust_logits(state.logits[i:i + 1], state.history[i:i + 1], rows[i].gen)
            tokens[i] = int(choose(logits, rows[i].gen, rows[i].generator)[0])
        return tokens

    def _step(self) -> None:
        """Choose each row's token with its own settings, hand it out, let finished rows leave, and
        run the next step for the others."""
        state, keep, tokens = self.state, [], []
        for i, (r, t) in enumerate(zip(self.running, self._choose())):
            if r.cancelled.is_set():
                r._finish("cancelled")
                continue
            if r.top_logprobs is not None:  # the model's own distribution, before temperature and filters
                r.logprobs.append(log_probs(state.logits[i], t, r.top_logprobs))
            r.produced.append(t)
            r._emit(t)
            if t in r.gen.stop_ids:
                r._finish("stop")
            elif len(r.produced) >= r.gen.max_new_tokens:
                r._finish("length")
            else:
                keep.append(i)
                tokens.append(t)
        if len(keep) < len(self.running):
            self.running = [self.running[i] for i in keep]
            if not keep:
                self.state = None
                return
            state.select(torch.tensor(keep, device=self.device))
            state.compact(self._reserve(self.running))
        state.native = self.native if isinstance(self.native, NativeDecoder) and len(keep) <= MAX_ROWS else None
        state.step(torch.tensor(tokens, device=self.device))
        self.steps += 1
