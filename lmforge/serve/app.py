"""`lmforge serve`: OpenAI's HTTP API over one model or several, for many clients at once.

    POST /v1/completions        prompt -> text            stream: Server-Sent Events, `data: [DONE]` last
    POST /v1/chat/completions   messages -> a reply       (rendered by the model's chat template)
    POST /v1/classify           texts (and pairs) -> labels and their probabilities (a fine-tuned classifier)
    GET  /v1/models             each model: its run, family, parameters, step
    POST /v1/admin/reload       load each model's newest checkpoint now (needs the API key)
    GET  /health, GET /metrics  (Prometheus: requests, tokens, queue, batch, latencies, steps, canary, drift)
    GET  /                      a chat page (static/: HTML, CSS and a script; no build step, works offline)

Each request's `model` picks one of the models (serve/models.py, which also swaps in a newer
checkpoint without failing a request). One Scheduler per model (generate/scheduler.py) decodes its
requests: a request joins the running batch at the next step and leaves when done, so clients
share each read of the weights. Errors are OpenAI's JSON, {"error": {"message", "type", "param",
"code"}}, with the HTTP status: 400 a malformed body or a prompt that does not fit, 401 a wrong API
key, 404 an unknown model, 429 a full queue; no request can stop the server or another client's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from lmforge.api import LM
from lmforge.errors import LmforgeError
from lmforge.serve.errors import ServeError, error_body
from lmforge.serve.metrics import Metrics
from lmforge.serve.models import Models
from lmforge.serve.schemas import ChatRequest, ClassifyRequest, CompletionRequest, ReloadRequest
from lmforge.serve.stream import respond

STATIC = Path(__file__).parent / "static"


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


def _error_handlers(app: FastAPI) -> None:
    """Every error a request can cause, as OpenAI's JSON with its status."""
    @app.exception_handler(ServeError)
    async def _serve_error(request, e: ServeError):
        return JSONResponse(error_body(e.message, e.kind, e.param, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'malformed')})",
                                           "invalid_request_error"), status_code=400)
        message, where = invalid_message(e.errors())
        return JSONResponse(error_body(message, "invalid_request_error", where), status_code=400)

    @app.exception_handler(LmforgeError)
    async def _lmforge_error(request, e: LmforgeError):
        return JSONResponse(error_body(str(e), "invalid_request_error"), status_code=400)

    @app.exception_handler(Exception)
    async def _fault(request, e: Exception):  # a fault of the server's own: still OpenAI's shape (and logged)
        return JSONResponse(error_body(f"the server failed on this request ({type(e).__name__}: {e})", "server_error"),
                            status_code=500)


FORM = re.compile(r"(str|int|float|bool|none|list|dict|tuple|literal)(\[.*\])?|[a-z]+-[a-z]+\[.*\]", re.I)


def invalid_message(errors: list[dict]) -> tuple[str, str | None]:
    """The first validation error as one sentence, and the field it is about. A field that takes one
    of several forms (pydantic tries each: `input` as str, then as list[str]) names the forms."""
    first = errors[0] if errors else {}
    loc = [str(x) for x in first.get("loc", ())[1:]]
    tried = [[str(x) for x in err.get("loc", ())[1:]] for err in errors]
    if len(loc) >= 2 and len(errors) > 1 and all(len(t) >= len(loc) and t[:len(loc) - 1] == loc[:-1]
                                                  and FORM.fullmatch(t[len(loc) - 1]) for t in tried):
        where = ".".join(loc[:-1])
        return f"{where} must be one of: {', '.join(dict.fromkeys(t[len(loc) - 1] for t in tried))}", where
    where = ".".join(loc) or None
    return (f"{where}: {first.get('msg', 'invalid')}" if where else f"the body is invalid ({first.get('msg')})"), where


def create_app(models: LM | dict[str, LM], name: str = "lmforge", max_batch: int = 16, max_queue: int = 256,
               api_key: str | None = None, thread: bool = True, watch: float = 0.0, monitor=None,
               log=print) -> FastAPI:
    """The app serving `models` (name -> LM), or one LM under the model name `name`. thread=False:
    the caller decodes, running `app.state.models.run()` (as `lmforge serve` does in its main thread).
    watch: seconds between looks at each run's commit marker (0: only POST /v1/admin/reload reloads).
    monitor: serve/monitor.py's Monitor (canary sets, drift of a classifier's predictions)."""
    hub = Models(models if isinstance(models, dict) else {name: models}, max_batch, max_queue, thread, log, monitor)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if watch > 0:
            hub.watch(watch)
        yield
        hub.stop()

    app = FastAPI(title="lmforge", lifespan=lifespan)
    app.state.models = hub
    _error_handlers(app)
    app.add_middleware(Counted, metrics=hub.metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def check(request: Request) -> None:
        if api_key is not None and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise ServeError(401, "the API key is missing or wrong; send Authorization: Bearer KEY",
                             "invalid_request_error")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(hub.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": next(iter(hub.served)), "models": list(hub.served),
                "batch": sum(s.batch_size for s in hub.schedulers()),
                "queue": sum(s.queue_length for s in hub.schedulers())}

    @app.get("/v1/models")
    async def listed(request: Request):
        check(request)
        return {"object": "list", "data": [s.current.describe() for s in hub.served.values()]}

    _model_routes(app, hub, check)
    _admin_routes(app, hub, check, api_key)
    return app


def _model_routes(app: FastAPI, hub: Models, check) -> None:
    """The routes a model answers: completions and chat (a decoder), classify (a classifier)."""
    async def generated(body, kind: str, prompt_of):
        """A decoder's answer, on the version of the model current now; prompt_of(version) ->
        (prompt ids, stop ids, stop strings)."""
        lease = hub.get(body.model).lease("generate")
        try:
            prompt, stop_ids, stops = prompt_of(lease.version)
            choices = lease.version.choices(body, prompt, stop_ids, stops)
        except BaseException:
            lease.release()
            raise
        return await respond(body.model, body, prompt, choices, kind, lease)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check(request)
        return await generated(body, "text_completion", lambda v: (v.completion_prompt(body), v.lm.end_ids, []))

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check(request)
        return await generated(body, "chat.completion", lambda v: v.chat_prompt(body))

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request):
        check(request)
        lease = hub.get(body.model).lease("classify")
        try:
            texts = [body.input] if isinstance(body.input, str) else list(body.input)
            pairs = [body.pair] if isinstance(body.pair, str) else body.pair
            data = await hub.monitor.classify(lease.version, texts, pairs)
        finally:
            lease.release()
        return {"object": "list", "model": body.model, "system_fingerprint": lease.version.fingerprint, "data": data}


def _admin_routes(app: FastAPI, hub: Models, check, api_key: str | None) -> None:
    """Reloading every model (or one) from its run now; only with the server's API key."""
    @app.post("/v1/admin/reload")
    async def reload(request: Request, body: ReloadRequest | None = None):
        if api_key is None:
            raise ServeError(403, "this server was started without --api-key, and reloading needs one; restart it "
                                  "with --api-key KEY and send Authorization: Bearer KEY", "permission_error")
        check(request)
        results = await asyncio.to_thread(hub.reload, body.model if body else None)
        failed = [r for r in results if not r["reloaded"]]
        if failed:
            return JSONResponse({**error_body("; ".join(f"{r['model']}: {r['error']}" for r in failed), "server_error",
                                              code="reload_failed"), "data": results}, status_code=500)
        return {"object": "list", "data": results}
