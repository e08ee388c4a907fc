"""A request's outputs as they are decoded: one JSON body, or Server-Sent Events.

Stop strings are caught across token boundaries: text that could be the start of a stop string is
held back until the next tokens show it is not. A client that goes away is dropped from the batch at
once. Each response names the weights it came from in `system_fingerprint` (serve/models.py: every
request runs wholly on the version of its model that was current when it arrived).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import TYPE_CHECKING

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from lmforge.api import cut_at_stop, hold_back
from lmforge.generate.scheduler import END
from lmforge.serve.errors import error_body

if TYPE_CHECKING:
    from lmforge.config import GenerateConfig


class Choice:
    """One output of a request: its scheduler request, and its text as it grows."""

    def __init__(self, version, prompt: list[int], gen: GenerateConfig, stops: list[str],
                 top: int | None = None):
        self.version, self.prompt, self.stops = version, prompt, stops
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent, self.finish = "", None
        self.reported = 0  # tokens whose logprobs a response has carried
        self.arrived, self.last = time.monotonic(), None
        self.request = version.scheduler.submit(
            prompt, gen, lambda t, wake=version.hub.wakeup(): wake.put(self.queue, t), top_logprobs=top)

    def logprobs(self, chat: bool, chars: int | None = None) -> dict | None:
        """OpenAI's logprobs object ("content" entries for chat, parallel lists for completions) for the
        tokens not yet reported that make the reply's text up to `chars` characters (default: all of
        it; a stop string cut off after it). A stream reports each piece's tokens with the piece."""
        r = self.request
        if r.top_logprobs is None:
            return None
        end = self._kept(len(self.sent) if chars is None else chars)
        entries = list(zip(r.produced[self.reported:end], r.logprobs[self.reported:end]))
        self.reported = end
        name = self.version.token_text
        if chat:
            return {"content": [{"token": name(t), "logprob": lp, "bytes": list(name(t).encode()),
                                 "top_logprobs": [{"token": name(i), "logprob": v, "bytes": list(name(i).encode())}
                                                  for i, v in top]} for t, (lp, top) in entries]}
        return {"tokens": [name(t) for t, _ in entries], "token_logprobs": [lp for _, (lp, _) in entries],
                "top_logprobs": [{name(i): v for i, v in top} for _, (_, top) in entries]}

    def _kept(self, chars: int) -> int:
        """How many tokens make the reply's first `chars` characters: the fewest whose text reaches them."""
        produced = self.request.produced
        for n in range(self.reported, len(produced) + 1):
            if len(self.version.lm.continuation(self.prompt, produced[:n])) >= chars:
                return n
        return len(produced)

    def _timed(self, tokens: int) -> None:
        """Metrics for `tokens` new tokens handled now: the first one's wait, the rest's share of the gap."""
        now, m = time.monotonic(), self.version.hub.metrics
        if self.last is None:
            m.first_token.observe(now - self.arrived)
            tokens -= 1
        for _ in range(tokens):
            m.per_token.observe((now - (self.last or now)) / tokens)
        self.last = now

    @property
    def used(self) -> int:
        return len(self.request.produced)

    async def pieces(self):
        """The text as it becomes final, piece by piece; self.finish is set at the end. Tokens that
        arrived while the last piece was being sent make one piece together."""
        text, seen, ended = "", 0, False
        while not ended:
            ended = await self.queue.get() is END
            while not ended and not self.queue.empty():
                ended = self.queue.get_nowait() is END
            produced = self.request.produced
            if len(produced) > seen:
                self._timed(len(produced) - seen)
                seen = len(produced)
            text, stopped = cut_at_stop(self.version.lm.continuation(self.prompt, produced), self.stops)
            if stopped:
                self.request.cancel()
                self.finish = "stop"
                break
            safe = hold_back(text, self.stops)
            if len(safe) > len(self.sent) and not ended:
                piece, self.sent = safe[len(self.sent):], safe
                yield piece
        self.version.hub.metrics.tokens_out.inc(self.used)
        if self.request.error is not None:
            raise self.request.error
        if self.finish is None:
            self.finish = "stop" if self.request.finish_reason == "stop" else "length"
        if len(text) > len(self.sent):
            yield text[len(self.sent):]
        self.sent = text


class Wakeup:
    """Hands tokens from the decoding thread to the event loop: `put` collects them, and `flush`
    (the scheduler's after_tick) passes a tick's tokens in one thread-safe hop, not one per token
    (each hop writes to the loop's wake-up pipe and wakes it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.items, self.lock = loop, [], threading.Lock()

    def put(self, queue: asyncio.Queue, item) -> None:
        with self.lock:
            self.items.append((queue, item))

    def flush(self) -> None:
        with self.lock:
            items, self.items = self.items, []
        if items:
            self.loop.call_soon_threadsafe(self._deliver, items)

    @staticmethod
    def _deliver(items: list) -> None:
        for queue, item in items:
            queue.put_nowait(item)


def _usage(prompt: list[int], choices: list[Choice]) -> dict:
    out = sum(c.used for c in choices)
    return {"prompt_tokens": len(prompt), "completion_tokens": out, "total_tokens": len(prompt) + out}


async def _collect(choices: list[Choice]) -> list[str]:
    async def one(c: Choice) -> str:
        return "".join([p async for p in c.pieces()])
    try:
        return await asyncio.gather(*(one(c) for c in choices))
    finally:
        for c in choices:
            c.request.cancel()


async def _updates(choices: list[Choice]):
    """(choice index, piece, finish, characters of its reply so far) as each choice's pieces come; a
    failure as finish "error" with the exception for piece. One choice is read directly; several
    are read by a task each into one queue."""
    async def one(i: int, c: Choice):
        reached = 0
        try:
            async for piece in c.pieces():
                reached += len(piece)
                yield i, piece, None, reached
            yield i, "", c.finish, reached
        except Exception as e:  # noqa: BLE001 - reported in the stream, the server goes on
            yield i, e, "error", 0
    if len(choices) == 1:
        async for update in one(0, choices[0]):
            yield update
        return
    merged: asyncio.Queue = asyncio.Queue()

    async def feed(i: int, c: Choice) -> None:
        async for update in one(i, c):
            await merged.put(update)
    tasks = [asyncio.create_task(feed(i, c)) for i, c in enumerate(choices)]
    try:
        open_ = len(choices)
        while open_:
            update = await merged.get()
            open_ -= update[2] is not None
            yield update
    finally:
        for t in tasks:
            t.cancel()


async def _events(choices: list[Choice], chunk, usage_chunk, done):
    """Server-Sent Events of the choices' pieces as they come, then the usage chunk and [DONE]; done()
    at the end, however it comes."""
    try:
        async for i, piece, finish, reached in _updates(choices):
            if finish == "error":
                yield f"data: {json.dumps(error_body(str(piece), 'server_error'))}\n\n"
                continue
            yield f"data: {json.dumps(chunk(i, piece, finish, reached), ensure_ascii=False)}\n\n"
        if usage_chunk is not None:
            yield f"data: {json.dumps(usage_chunk())}\n\n"
        yield "data: [DONE]\n\n"
    finally:  # also when the client went away: its requests leave the batch now
        for c in choices:
            c.request.cancel()
        done()


async def respond(name: str, body, prompt: list[int], choices: list[Choice], kind: str, lease):
    """The response to a request: one JSON body, or (stream) Server-Sent Events. The lease on the
    model's version (serve/models.py) is given back once the response has been sent, or has failed."""
    rid, created = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "created": created, "model": name, "system_fingerprint": lease.version.fingerprint}
    chat_ = kind == "chat.completion"
    if body.stream:
        def chunk(i, piece, finish, reached):
            logprobs = choices[i].logprobs(chat_, reached)
            if chat_:
                delta = {"role": "assistant", "content": piece} if piece or finish is None else {}
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": i, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}
            return {**head, "object": "text_completion",
                    "choices": [{"index": i, "text": piece, "finish_reason": finish, "logprobs": logprobs}]}
        def usage():
            return {**head, "object": "chat.completion.chunk" if chat_ else "text_completion", "choices": [],
                    "usage": _usage(prompt, choices)}
        wanted = body.stream_options is not None and body.stream_options.include_usage
        # given back by the stream's end, or (a client gone before the first byte) by the response's end
        return StreamingResponse(_events(choices, chunk, usage if wanted else None, lease.release),
                                 media_type="text/event-stream", background=BackgroundTask(lease.release))
    try:  # the lease is held until the logprobs, which read the version's tokenizer, are written
        texts = await _collect(choices)
        if chat_:
            out = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": c.finish,
                    "logprobs": c.logprobs(True)} for i, (t, c) in enumerate(zip(texts, choices))]
        else:
            out = [{"index": i, "text": t, "finish_reason": c.finish, "logprobs": c.logprobs(False)}
                   for i, (t, c) in enumerate(zip(texts, choices))]
    finally:
        lease.release()
    return {**head, "object": kind, "choices": out, "usage": _usage(prompt, choices)}
