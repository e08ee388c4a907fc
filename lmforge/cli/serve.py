"""`lmforge serve`: a trained model behind OpenAI's HTTP API (lmforge/serve/), until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
import time

from lmforge.errors import LmforgeError


def cmd_serve(args) -> None:
    try:
        import uvicorn

        from lmforge.serve.app import create_app
    except ImportError as e:
        raise LmforgeError(f"lmforge serve needs FastAPI and uvicorn ({e.name} is missing); install them with "
                           "pip install 'lmforge[serve]' (in a clone: pip install -e '.[serve]')") from None
    import lmforge

    lm = lmforge.load(args.run)
    if lm.seq2seq:
        raise LmforgeError("lmforge serve serves decoder-only (GPT / Llama) models; use lmforge translate for an "
                           "encoder-decoder")
    name = args.name or lm.path.name
    app = create_app(lm, name, max_batch=args.max_batch, max_queue=args.max_queue, api_key=args.api_key,
                     thread=False)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    print(f"serving {args.run} as model {name!r} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    decode_in_main_thread(server, app.state.server.scheduler)


def decode_in_main_thread(server, scheduler) -> None:
    """HTTP on a second thread, decoding here, in the thread that loaded the model (why: the
    Scheduler's docstring, on OpenMP's thread pools). Ctrl-C or SIGTERM stops both."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    http = threading.Thread(target=server.run, name="lmforge-http")
    http.start()
    try:
        while http.is_alive() and not server.started:
            time.sleep(0.01)
        if server.started:
            scheduler.run()  # until the app's shutdown stops it
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.stop()
        server.should_exit = True
        http.join()


def add_commands(sub, command, json_flag) -> None:
    s = command("serve", cmd_serve, "serve a trained model over OpenAI's HTTP API (/v1/chat/completions, "
                                    "/v1/completions), many clients at once")
    s.add_argument("run", help="run directory, or a Hugging Face GPT-2 / Llama directory")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    s.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default: 16)")
    s.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond those; more get 429 "
                   "(default: 256)")
    s.add_argument("--api-key", help="require Authorization: Bearer KEY on every request")
    s.add_argument("--name", help="the model's name in requests and /v1/models (default: the run's folder name)")
