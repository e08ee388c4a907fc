"""`lmforge serve RUN`: OpenAI's HTTP API over one model, for many clients at once.

    POST /v1/completions        prompt -> text            stream: Server-Sent Events, `data: [DONE]` last
    POST /v1/chat/completions   messages -> a reply       (rendered by the model's chat template)
    GET  /v1/models, GET /health, GET /metrics (Prometheus: requests, tokens, queue, batch, latencies)
    GET  /                      a chat page (static/: HTML, CSS and a script; no build step, works offline)

One Scheduler (generate/scheduler.py) decodes every request: a request joins the running batch at
the next step and leaves when done, so clients share each read of the weights. Stop strings are
caught across token boundaries: text that could be the start of a stop string is held back until
the next tokens show it is not. A client that goes away is dropped from the batch at once. Errors
are OpenAI's JSON, {"error": {"message", "type", "param", "code"}}, with the HTTP status: 400 a
malformed body or a prompt that does not fit, 401 a wrong API key, 404 an unknown model, 429 a full
queue; no request can stop the server or another client's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from lmforge.api import LM, cut_at_stop, hold_back
from lmforge.chat import ChatTemplate, HFChatTemplate, hf_chat_template
from lmforge.config import GenerateConfig
from lmforge.errors import LmforgeError
from lmforge.generate.scheduler import END, QueueFull, Scheduler
from lmforge.serve.metrics import Metrics
from lmforge.serve.schemas import ChatRequest, CompletionRequest, Sampling

STATIC = Path(__file__).parent / "static"


class ServeError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Choice:
    """One output of a request: its scheduler request, and its text as it grows."""

    def __init__(self, server: "Server", prompt: list[int], gen: GenerateConfig, stops: list[str],
                 top: int | None = None):
        self.server, self.prompt, self.stops = server, prompt, stops
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent, self.finish = "", None
        self.reported = 0  # tokens whose logprobs a response has carried
        self.arrived, self.last = time.monotonic(), None
        self.request = server.scheduler.submit(
            prompt, gen, lambda t, wake=server.wakeup(): wake.put(self.queue, t), top_logprobs=top)

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
        name = self.server.token_text
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
            if len(self.server.lm.continuation(self.prompt, produced[:n])) >= chars:
                return n
        return len(produced)

    def _timed(self, tokens: int) -> None:
        """Metrics for `tokens` new tokens handled now: the first one's wait, the rest's share of the gap."""
        now, m = time.monotonic(), self.server.metrics
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
            text, stopped = cut_at_stop(self.server.lm.continuation(self.prompt, produced), self.stops)
            if stopped:
                self.request.cancel()
                self.finish = "stop"
                break
            safe = hold_back(text, self.stops)
            if len(safe) > len(self.sent) and not ended:
                piece, self.sent = safe[len(self.sent):], safe
                yield piece
        self.server.metrics.tokens_out.inc(self.used)
        if self.request.error is not None:
            raise self.request.error
        if self.finish is None:
            self.finish = "stop" if self.request.finish_reason == "stop" else "length"
        if len(text) > len(self.sent):
            yield text[len(self.sent):]
        self.sent = text


class Counted:
    """Counts each HTTP request by path and status for /metrics. Plain ASGI rather than
    @app.middleware("http"), which relays every chunk of a streamed body through a stream of its own."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(scope["path"], str(message["status"])).inc()
            await send(message)
        await self.app(scope, receive, sending)


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


class Server:
    def __init__(self, lm: LM, name: str, max_batch: int, max_queue: int, thread: bool = True):
        self.lm, self.name = lm, name
        native = lm.engine._native(1)  # the compiled step, where it covers the model
        self.scheduler = Scheduler(lm.model, max_batch, max_queue, native=native, thread=thread)
        self.template = (lm.path and hf_chat_template(lm.path)) or ChatTemplate()
        self.metrics = Metrics(self.scheduler)
        self._wakeup: Wakeup | None = None

    def wakeup(self) -> Wakeup:
        """The Wakeup of the event loop serving requests (made on first use, inside that loop)."""
        if self._wakeup is None:
            self._wakeup = Wakeup(asyncio.get_running_loop())
            self.scheduler.after_tick = self._wakeup.flush
        return self._wakeup

    def token_text(self, i: int) -> str:
        return self.lm.tokenizer.decode([i], skip_special_tokens=False)

    def settings(self, body: Sampling, prompt: list[int], stop_ids: tuple[int, ...], i: int) -> GenerateConfig:
        context = self.lm.config.context_length
        if len(prompt) >= context:
            raise ServeError(400, f"the prompt is {len(prompt)} tokens; this model's context is {context} tokens, "
                                  "with room needed for the reply: shorten it", param="messages")
        limit = getattr(body, "max_completion_tokens", None) or body.max_tokens or context - len(prompt)
        return GenerateConfig(max_new_tokens=min(limit, context - len(prompt)), temperature=body.temperature,
                              top_p=body.top_p if body.top_p < 1 else None, stop_ids=stop_ids,
                              seed=None if body.seed is None else body.seed + i)

    def chat_prompt(self, body: ChatRequest) -> tuple[list[int], tuple[int, ...], list[str]]:
        system = next((m.content for m in body.messages if m.role == "system"), None)
        turns = [(m.role, m.content) for m in body.messages if m.role != "system"]
        text = self.template.render(turns, system)
        if isinstance(self.template, HFChatTemplate):
            return self.lm.tokenizer.encode(text), self.template.stop_ids + self.lm.end_ids, list(self.template.stops)
        return self.lm.encode_prompt(text), self.lm.end_ids, list(self.template.stops)

    def completion_prompt(self, body: CompletionRequest) -> list[int]:
        if isinstance(body.prompt, list):
            vocab = self.lm.config.vocab_size
            if not body.prompt or any(not 0 <= t < vocab for t in body.prompt):
                raise ServeError(400, f"a prompt of token ids needs ids in 0..{vocab - 1}", param="prompt")
            return list(body.prompt)
        if not body.prompt:
            raise ServeError(400, "the prompt is empty", param="prompt")
        return self.lm.encode_prompt(body.prompt)

    def choices(self, body: Sampling, prompt: list[int], stop_ids, stops: list[str]) -> list[Choice]:
        self.metrics.tokens_in.inc(len(prompt))
        made = []
        try:
            for i in range(body.n):
                made.append(Choice(self, prompt, self.settings(body, prompt, stop_ids, i), stops + (body.stop or []),
                                   body.top))
        except QueueFull as e:
            for c in made:
                c.request.cancel()
            raise ServeError(429, str(e), "rate_limit_exceeded") from None
        return made


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


async def _events(choices: list[Choice], chunk, usage_chunk):
    """Server-Sent Events of the choices' pieces as they come, then the usage chunk and [DONE]."""
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


def _error_handlers(app: FastAPI) -> None:
    """Every error a request can cause, as OpenAI's JSON with its status."""
    @app.exception_handler(ServeError)
    async def _serve_error(request, e: ServeError):
        return JSONResponse(error_body(e.message, e.kind, e.param), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'malformed')})",
                                           "invalid_request_error"), status_code=400)
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        message = f"{where}: {first.get('msg', 'invalid')}" if where else f"the body is invalid ({first.get('msg')})"
        return JSONResponse(error_body(message, "invalid_request_error", where), status_code=400)

    @app.exception_handler(LmforgeError)
    async def _lmforge_error(request, e: LmforgeError):
        return JSONResponse(error_body(str(e), "invalid_request_error"), status_code=400)


async def respond(name: str, body: Sampling, prompt: list[int], choices: list[Choice], kind: str):
    """The response to a request: one JSON body, or (stream) Server-Sent Events."""
    rid, created = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "created": created, "model": name}
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
        return StreamingResponse(_events(choices, chunk, usage if wanted else None), media_type="text/event-stream")
    texts = await _collect(choices)
    if chat_:
        out = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": c.finish,
                "logprobs": c.logprobs(True)} for i, (t, c) in enumerate(zip(texts, choices))]
    else:
        out = [{"index": i, "text": t, "finish_reason": c.finish, "logprobs": c.logprobs(False)}
               for i, (t, c) in enumerate(zip(texts, choices))]
    return {**head, "object": kind, "choices": out, "usage": _usage(prompt, choices)}


def create_app(lm: LM, name: str = "lmforge", max_batch: int = 16, max_queue: int = 256,
               api_key: str | None = None, thread: bool = True) -> FastAPI:
    """The app serving `lm` under the model name `name`. thread=False: the caller decodes, running
    `app.state.server.scheduler.run()` (as `lmforge serve` does in its main thread)."""
    server = Server(lm, name, max_batch, max_queue, thread)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.scheduler.stop()

    app = FastAPI(title="lmforge", lifespan=lifespan)
    app.state.server = server

    _error_handlers(app)

    def check(request: Request, body: Sampling | None = None) -> None:
        if api_key is not None and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise ServeError(401, "the API key is missing or wrong; send Authorization: Bearer KEY",
                             "invalid_request_error")
        if body is not None and body.model != name:
            raise ServeError(404, f"the model {body.model!r} does not exist here; this server has {name!r}",
                             param="model")

    app.add_middleware(Counted, metrics=server.metrics)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(server.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "batch": server.scheduler.batch_size,
                "queue": server.scheduler.queue_length}

    @app.get("/v1/models")
    async def models(request: Request):
        check(request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "lmforge"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check(request, body)
        prompt = server.completion_prompt(body)
        return await respond(name, body, prompt, server.choices(body, prompt, server.lm.end_ids, []),
                             "text_completion")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check(request, body)
        prompt, stop_ids, stops = server.chat_prompt(body)
        return await respond(name, body, prompt, server.choices(body, prompt, stop_ids, stops), "chat.completion")

    return app
