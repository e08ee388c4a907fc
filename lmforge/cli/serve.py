"""`lmforge serve`: a trained model behind OpenAI's HTTP API (lmforge/serve/), until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from lmforge.errors import LmforgeError


def cmd_serve(args) -> None:
    try:
        import uvicorn

        from lmforge.serve.app import create_app
        from lmforge.serve.monitor import Monitor, parse_canaries
    except ImportError as e:
        raise LmforgeError(f"lmforge serve needs FastAPI and uvicorn ({e.name} is missing); install them with "
                           "pip install 'lmforge[serve]' (in a clone: pip install -e '.[serve]')") from None
    import lmforge

    runs = served_runs(args)
    if args.watch < 0 or args.psi_threshold <= 0 or args.drift_window < 1:
        raise LmforgeError("--watch takes seconds >= 0 (0: off), --psi-threshold a number > 0 and --drift-window "
                           "a count >= 1")
    canaries = parse_canaries(args.canary or [], list(runs))
    models = {name: lmforge.load(run) for name, run in runs.items()}
    monitor = Monitor(canaries, args.psi_threshold, args.drift_window, log=_stderr)
    app = create_app(models, max_batch=args.max_batch, max_queue=args.max_queue, api_key=args.api_key, thread=False,
                     watch=args.watch, monitor=monitor, log=_stderr)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    for name, run in runs.items():
        print(f"serving {run} as model {name!r}", file=sys.stderr)
    print(f"on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    decode_in_main_thread(server, app.state.models)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def served_runs(args) -> dict[str, str]:
    """Model name -> run directory, from RUN (named by --name or its folder) and each --model NAME=RUN."""
    runs: dict[str, str] = {}
    if args.run:
        runs[args.name or Path(args.run).resolve().name] = args.run
    elif args.name:
        raise LmforgeError("--name names the RUN given first; with --model, write NAME=RUN")
    for spec in args.model or []:
        name, sep, run = spec.partition("=")
        if not sep or not name or not run:
            raise LmforgeError(f"--model takes NAME=RUN, not {spec!r}; for example --model small=runs/small")
        if name in runs:
            raise LmforgeError(f"two models are named {name!r}; give each --model its own name")
        runs[name] = run
    if not runs:
        raise LmforgeError("give a run to serve: lmforge serve RUN, or --model NAME=RUN (once per model)")
    return runs


def decode_in_main_thread(server, decoder) -> None:
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
            decoder.run()  # until the app's shutdown stops it
    except KeyboardInterrupt:
        pass
    finally:
        decoder.stop()
        server.should_exit = True
        http.join()


def add_commands(sub, command, json_flag) -> None:
    s = command("serve", cmd_serve, "serve trained models over OpenAI's HTTP API (/v1/chat/completions, "
                "/v1/completions; a classifier at /v1/classify), many clients at once, a newer checkpoint swapped in")
    s.add_argument("run", nargs="?", help="run directory, or a Hugging Face GPT-2 / Llama directory (or give --model)")
    s.add_argument("--model", action="append", metavar="NAME=RUN", help="serve RUN as model NAME; repeat for several "
                   "models (each request's \"model\" picks one; NAME cannot hold '='). A classifier run is served at /v1/classify")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    s.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default: 16)")
    s.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond those; more get 429 "
                   "(default: 256)")
    s.add_argument("--api-key", help="require Authorization: Bearer KEY on every request")
    s.add_argument("--name", help="RUN's model name in requests and /v1/models (default: the run's folder name)")
    s.add_argument("--watch", type=float, default=5.0, help="seconds between looks at each run for a newer "
                   "checkpoint, which is then loaded and swapped in without failing a request (default: 5; 0: only "
                   "POST /v1/admin/reload reloads)")
    s.add_argument("--canary", action="append", metavar="[NAME=]FILE", help="a labelled file scored at start-up and "
                   "after every reload (a classifier's accuracy, a decoder's perplexity), exported in /metrics; "
                   "NAME= for one model only")
    s.add_argument("--psi-threshold", type=float, default=0.25, help="/v1/classify: the population stability index of "
                   "the recent predicted labels against the validation split's above which a warning is logged "
                   "(default: 0.25)")
    s.add_argument("--drift-window", type=int, default=1000, help="/v1/classify: the predictions the drift is "
                   "measured over (default: the last 1000)")
