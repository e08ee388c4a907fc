"""`python -m bench.serve [--json] [--quick] [--out FILE]`: serving throughput and latency, `lmforge serve`
beside `transformers serve`, on the same model in one run.

The model: the bench's GPT shape (bench/peers/base.py: 6 layers, 384 wide, 6 heads, context 256, GPT-2's
parts), with a byte-level BPE of 8,192 entries trained by lmforge on tinyshakespeare, randomly
initialised (seeded), not trained: a throughput bench needs the shape, not the quality. It is saved as an
lmforge run and exported by `lmforge.api.export_hf` to a Hugging Face GPT-2 directory in a temp folder,
which every server loads. Greedy, this model repeats a few ordinary tokens and never emits EOS here, so
requests run to max_tokens; tokens are counted all the same (the usage in the stream's last chunk, else
one per text chunk), and `finish_reasons` would show an early stop.

The servers, subprocesses on 127.0.0.1 and a free port, one at a time (never two at once); a row whose
server does not start is skipped with the reason:

  lmforge                 lmforge serve DIR --max-batch 32: continuous batching (generate/scheduler.py;
                          its compiled CPU step takes up to 16 rows, larger batches step in PyTorch)
  lmforge_one_at_a_time   lmforge serve DIR --max-batch 1: the same server, requests queue and run alone
  transformers            transformers serve DIR --device cpu: one model.generate() per request, in turn
  transformers_cb         the same with --continuous-batching (paged attention), its KV cache held to about
                          1 GiB by --cb-max-memory-percent (1 GiB / this machine's RAM): left alone on a CPU
                          it takes 60-90% of the RAM (7 GB resident after one request on a 24 GB machine;
                          1 GB with the bound, at the same speed in quick runs)

Each server is awaited on GET /health, then measured at 1, 8 and 32 concurrent clients (--quick: 1 and
8, 32 tokens), each measurement after one warm-up request alone. The clients are asyncio tasks sharing
an httpx pool; each streams `POST /v1/completions` (stream, max_tokens 128, temperature 0, a distinct
short prompt, include_usage; every server gets the same prompts). Figures:

  tokens_per_s   all completion tokens / wall time from the first request sent to the last stream closed
  ttft_ms        request sent -> first chunk carrying text (queueing included): median, p99 (nearest rank)
  itl_ms         per request (last text chunk - first) / (tokens - 1), median over requests; the raw gaps
                 between chunks are reported beside it (chunk_gap_ms_median): a server may hold a token
                 back (a partial UTF-8 character) or send several in one write

Ratios: lmforge / each transformers row, and lmforge / lmforge_one_at_a_time, at each concurrency. The
issue's targets at 32 clients (--quick: at 8, not the target's setting): lmforge >= 3x transformers'
throughput (judged against `transformers serve` as it starts, and once more against its
--continuous-batching mode) and continuous batching >= 4x one at a time. The clients run
in this process and share the CPU with the server (2 cores here), a small, real tax on every row alike;
servers use torch's default threads. Quote figures from an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.classify import machine

SIZES = {"quick": ((1, 8), 32), "default": ((1, 8, 32), 128)}  # (concurrent clients, max_tokens)
ROWS = {  # row -> (server, extra flags)
    "lmforge": ("lmforge", ["--max-batch", "32"]),
    "lmforge_one_at_a_time": ("lmforge", ["--max-batch", "1"]),
    "transformers": ("transformers", []),
    "transformers_cb": ("transformers", ["--continuous-batching", "--cb-max-memory-percent", "{cache_share}"]),
}
NAME = "bench-gpt"  # the model's name in requests to lmforge serve (transformers: the directory's path)
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="the JSON on stdout and in a results file; the table on stderr")
    ap.add_argument("--quick", action="store_true", help="1 and 8 clients, 32 tokens: a smoke test")
    ap.add_argument("--out", type=Path, help="the results file (default: bench/results/DATE-serve-cpu-MACHINE.json)")
    ap.add_argument("--clients", help="concurrency levels, e.g. 1,8,32 (default: 1,8,32; --quick 1,8)")
    ap.add_argument("--max-tokens", type=int, help="tokens per request (default 128; --quick 32)")
    ap.add_argument("--requests-per-client", type=int, default=1, help="requests each client sends in turn")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"servers to run, of {','.join(ROWS)}")
    ap.add_argument("--startup-timeout", type=float, default=300, help="seconds for a server to answer /health")
    ap.add_argument("--timeout", type=float, default=900, help="seconds for one measurement (all its clients)")
    ap.add_argument("--seed", type=int, default=1337, help="the model's init seed")
    args = ap.parse_args(argv)
    clients, tokens = SIZES["quick" if args.quick else "default"]
    args.clients = [int(c) for c in args.clients.split(",")] if args.clients else list(clients)
    args.max_tokens = args.max_tokens or tokens
    args.rows = [r for r in args.rows.split(",") if r]
    if any(r not in ROWS for r in args.rows):
        ap.error(f"--rows takes some of {', '.join(ROWS)}")
    return args


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the model


def export_model(work: Path, seed: int) -> tuple[Path, dict]:
    """The bench's GPT, randomly initialised, saved as an lmforge run and exported as a GPT-2 directory."""
    import torch

    from bench.tokens import DEFAULT_TEXT
    from bench.peers.base import Shape
    from lmforge.api import export_hf
    from lmforge.checkpoint import save_checkpoint
    from lmforge.config import model_config_from_preset
    from lmforge.models.gpt import GPT
    from lmforge.tokenizer import train_bpe

    shape = Shape()
    have_text = DEFAULT_TEXT.is_file()
    text = DEFAULT_TEXT.read_text(encoding="utf-8") if have_text else " ".join(prompt(i) for i in range(999))
    tok = train_bpe([text], shape.vocab_size)
    cfg = model_config_from_preset(
        "gpt-small", n_layer=shape.n_layer, n_head=shape.n_head, d_model=shape.d_model, vocab_size=tok.vocab_size,
        context_length=shape.context_length, dropout=0.0, position="learned", norm="layernorm", activation="gelu",
        bias=True, tie_embeddings=True)
    torch.manual_seed(seed)
    model = GPT(cfg)
    save_checkpoint(work / "run", model, tok)
    hf_dir = export_hf(work / "run", work / "hf")
    info = {"shape": f"{shape.n_layer} layers x {shape.d_model} wide, {shape.n_head} heads, context "
                     f"{shape.context_length}", "vocab_size": tok.vocab_size, "params": model.num_params(),
            "init": f"random (torch.manual_seed({seed})), not trained", "eos_id": tok.eos_id,
            "tokenizer_text": str(DEFAULT_TEXT) if have_text else "the prompts (text file missing)",
            "exported_files": sorted(p.name for p in hf_dir.iterdir())}
    return hf_dir, info


def prompt(i: int) -> str:
    return f"Request {i}: what light through yonder window breaks"


# ------------------------------------------------------------------------------------------ servers


class ServerFailed(Exception):
    """A server that did not start, or failed while measured."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(row: str, hf_dir: Path, port: int) -> tuple[list[str], str]:
    """The server's command line and the model name its requests carry."""
    kind, flags = ROWS[row]
    if kind == "lmforge":
        return [sys.executable, "-m", "lmforge", "serve", str(hf_dir), "--host", "127.0.0.1", "--port", str(port),
                "--name", NAME, *flags], NAME
    exe = Path(sys.executable).parent / "transformers"
    if not exe.is_file():
        raise ServerFailed(f"no transformers command beside {sys.executable}")
    cache_share = f"{min(0.9, 2**30 / (os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))):.4f}"  # 1 GiB
    # FORCE_MODEL pins the server to the directory; requests must name it by the same string
    return [str(exe), "serve", str(hf_dir), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
            *(f.format(cache_share=cache_share) for f in flags)], str(hf_dir)


def tail(log_path: Path, n: int = 600) -> str:
    return log_path.read_text(errors="replace")[-n:].strip() if log_path.is_file() else ""


@contextlib.contextmanager
def running(cmd: list[str], base: str, log_path: Path, startup_timeout: float):
    """A server process in its own process group; yields once GET /health answers 200 (the seconds it
    took), and stops the whole group on leaving (SIGTERM, then SIGKILL), whatever happened."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    try:
        yield wait_healthy(proc, base, log_path, startup_timeout)
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, sig)  # the group: the server and anything it started
                proc.wait(wait)


def wait_healthy(proc: subprocess.Popen, base: str, log_path: Path, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise ServerFailed(f"exited with status {proc.returncode} before /health answered: {tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return round(time.monotonic() - start, 1)
        time.sleep(0.5)
    raise ServerFailed(f"/health did not answer 200 within {timeout:.0f} s: {tail(log_path)}")


# ------------------------------------------------------------------------------------------ clients


async def stream_one(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """One streamed completion: when it was sent and closed, when each text chunk came, the token count."""
    sent, chunks, usage, finish = time.perf_counter(), [], None, None
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {(await r.aread())[:300].decode(errors='replace')}"}
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":  # lmforge ends so; transformers closes the stream after its usage chunk
                break
            event = json.loads(data)
            if "error" in event:
                return {"error": str(event["error"])[:300]}
            for choice in event.get("choices") or []:
                if choice.get("text"):
                    chunks.append(time.perf_counter())
                finish = choice.get("finish_reason") or finish
            usage = event.get("usage") or usage
    tokens = usage["completion_tokens"] if usage else len(chunks)
    return {"sent": sent, "done": time.perf_counter(), "chunks": chunks, "tokens": tokens,
            "tokens_from": "usage" if usage else "chunks", "finish": finish}


async def run_clients(base: str, model: str, clients: int, per_client: int, first_prompt: int, max_tokens: int,
                      timeout: float) -> tuple[float, list[dict]]:
    """`clients` concurrent clients, each sending `per_client` requests in turn; (start time, results)."""
    url, limits = f"{base}/v1/completions", httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10), limits=limits) as client:
        async def one_client(c: int) -> list[dict]:
            out = []
            for k in range(per_client):
                body = {"model": model, "prompt": prompt(first_prompt + c * per_client + k), "max_tokens": max_tokens,
                        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
                try:
                    out.append(await stream_one(client, url, body))
                except (httpx.HTTPError, ValueError) as e:
                    out.append({"error": f"{type(e).__name__}: {e}"[:300]})
            return out

        start = time.perf_counter()
        done = await asyncio.wait_for(asyncio.gather(*(one_client(c) for c in range(clients))), timeout)
    return start, [r for rows in done for r in rows]


def ms(values: list[float], q: float | None = None) -> float | None:
    """The median of `values` (seconds) in milliseconds, or with q its nearest-rank q-quantile."""
    if not values:
        return None
    v = statistics.median(values) if q is None else sorted(values)[max(0, math.ceil(q * len(values)) - 1)]
    return round(v * 1000, 2)


def summarise(clients: int, start: float, results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    out = {"clients": clients, "requests": len(results), "errors": len(results) - len(ok)}
    if out["errors"]:
        out["first_error"] = next(r["error"] for r in results if "error" in r)
    if not ok:
        return out
    tokens, wall = sum(r["tokens"] for r in ok), max(r["done"] for r in ok) - start
    ttft = [r["chunks"][0] - r["sent"] for r in ok if r["chunks"]]
    itl = [(r["chunks"][-1] - r["chunks"][0]) / (r["tokens"] - 1)
           for r in ok if len(r["chunks"]) > 1 and r["tokens"] > 1]
    gaps = [b - a for r in ok for a, b in zip(r["chunks"], r["chunks"][1:])]
    out.update(completion_tokens=tokens, tokens_per_request=sorted({min(r["tokens"] for r in ok),
                                                                     max(r["tokens"] for r in ok)}),
               tokens_from=sorted({r["tokens_from"] for r in ok}),
               finish_reasons=dict(Counter(str(r["finish"]) for r in ok)), wall_s=round(wall, 3),
               tokens_per_s=round(tokens / wall, 1), ttft_ms_median=ms(ttft), ttft_ms_p99=ms(ttft, 0.99),
               itl_ms_median=ms(itl), chunk_gap_ms_median=ms(gaps))
    return out


# ------------------------------------------------------------------------------------------ one row


def run_row(row: str, hf_dir: Path, work: Path, args) -> dict:
    """Start the row's server, measure each concurrency, stop it."""
    port, log_path = free_port(), work / f"{row}.log"
    try:
        cmd, model = command(row, hf_dir, port)
    except ServerFailed as e:
        return {"status": "skipped", "reason": str(e)}
    out, base = {"command": " ".join(cmd), "by_clients": {}}, f"http://127.0.0.1:{port}"
    try:
        with running(cmd, base, log_path, args.startup_timeout) as startup_s:
            out["startup_s"] = startup_s
            log(f"{row}: up in {out['startup_s']} s ({out['command']})")
            for level, clients in enumerate(args.clients):  # every row gets the same prompts
                out["by_clients"][str(clients)] = m = measure(base, model, clients, 100 * level, args, log_path)
                log(f"{row}: {clients:>2} clients: {m.get('tokens_per_s')} tokens/s, TTFT p50 "
                    f"{m.get('ttft_ms_median')} ms, ITL p50 {m.get('itl_ms_median')} ms, {m['errors']} errors")
    except (ServerFailed, asyncio.TimeoutError, httpx.HTTPError) as e:  # ServerFailed before /health: no start
        failed = isinstance(e, ServerFailed)
        why = str(e) if failed else f"{type(e).__name__} {e}".strip() + ": past --timeout, or a broken connection"
        out.update(status="error" if "startup_s" in out or not failed else "skipped", reason=why)
        log(f"{row}: {out['status']}: {out['reason']}")
        return out
    out["status"] = "ok"
    return out


def measure(base: str, model: str, clients: int, first_prompt: int, args, log_path: Path) -> dict:
    """One warm-up request alone, then `clients` concurrent clients."""
    _, warm = asyncio.run(run_clients(base, model, 1, 1, first_prompt, args.max_tokens, args.timeout))
    if "error" in warm[0]:
        raise ServerFailed(f"the warm-up request failed: {warm[0]['error']}; log: {tail(log_path)}")
    start, results = asyncio.run(run_clients(base, model, clients, args.requests_per_client, first_prompt + 1,
                                             args.max_tokens, args.timeout))
    return summarise(clients, start, results)


# ------------------------------------------------------------------------------------------ report


def throughput(out: dict, row: str, clients: int) -> float | None:
    return ((out["servers"].get(row) or {}).get("by_clients", {}).get(str(clients)) or {}).get("tokens_per_s")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios_and_targets(out: dict, levels: list[int]) -> None:
    pairs = {"lmforge_over_transformers": "transformers", "lmforge_over_transformers_cb": "transformers_cb",
             "continuous_over_one_at_a_time": "lmforge_one_at_a_time"}
    out["ratios"] = {key: {str(c): ratio(throughput(out, "lmforge", c), throughput(out, peer, c)) for c in levels}
                     for key, peer in pairs.items()}
    top = max(levels)
    note = None if top == 32 else f"measured at {top} clients, not the target's 32"
    targets = {"lmforge_3x_transformers": ("lmforge_over_transformers", 3.0),  # `transformers serve` as it starts
               "lmforge_3x_transformers_cb": ("lmforge_over_transformers_cb", 3.0),  # its continuous batching
               "continuous_4x_one_at_a_time": ("continuous_over_one_at_a_time", 4.0)}
    out["targets"] = {}
    for key, (ratio_key, target) in targets.items():
        value = out["ratios"][ratio_key][str(top)]
        out["targets"][key] = {"clients": top, "ratio": value, "target": target,
                               "met": None if value is None else value >= target, "note": note}


def fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def table(out: dict) -> str:
    head = (f"{'server':<24}{'clients':>8}{'reqs':>6}{'tokens':>8}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}"
            f"{'ITL p50':>9}")
    lines = [head + "   (ms)", "-" * (len(head) + 5)]
    for row, r in out["servers"].items():
        if r.get("status") != "ok":
            lines.append(f"{row:<24}{r.get('status')}: {' '.join(r.get('reason', '').split())[:300]}")
        for c, m in r.get("by_clients", {}).items():
            lines.append(f"{row:<24}{c:>8}{m['requests']:>6}{fmt(m.get('completion_tokens'), 'd'):>8}"
                         f"{fmt(m.get('tokens_per_s')):>9}{fmt(m.get('ttft_ms_median')):>10}"
                         f"{fmt(m.get('ttft_ms_p99')):>10}{fmt(m.get('itl_ms_median')):>9}"
                         + (f"  {m['errors']} errors" if m["errors"] else ""))
    lines.append("")
    times = lambda v: fmt(v, ".2f") + "x" * bool(v)  # noqa: E731
    for key, by in out["ratios"].items():
        lines.append(f"{key:<32}" + "  ".join(f"{c} clients: {times(v)}" for c, v in by.items()))
    for key, t in out["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"target {key} (>= {t['target']}x at {t['clients']} clients): {times(t['ratio'])}: "
                     f"{verdict}" + (f" [{t['note']}]" if t["note"] else ""))
    return "\n".join(lines)


def lmforge_commit() -> str | None:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=RESULTS.parent.parent, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return git("rev-parse", "--short", "HEAD") + (" (modified)" if git("status", "--porcelain", "lmforge") else "")
    return None


def results_path(out: dict, quick: bool) -> Path:
    """bench/results/DATE-serve-cpu-MACHINE.json, MACHINE from the CPU's name (intel-xeon, amd-epyc)."""
    words = re.sub(r"\((r|tm)\)", " ", out["machine"]["cpu"].lower()).replace("cpu", " ").split()
    slug = "-".join(re.sub(r"[^a-z0-9]+", "", w) for w in words[:2]) or "unknown"
    return RESULTS / f"{out['date']}-serve-cpu-{slug}{'-quick' if quick else ''}.json"


def main(argv=None) -> int:
    import torch
    import transformers

    args = parse_args(argv)
    out = {"date": datetime.date.today().isoformat(),
           "machine": {**machine(), "torch": torch.__version__, "transformers": transformers.__version__,
                       "torch_threads": torch.get_num_threads(), "lmforge_commit": lmforge_commit()},
           "setup": {"clients": args.clients, "max_tokens": args.max_tokens, "temperature": 0,
                     "requests_per_client": args.requests_per_client, "prompt_example": prompt(1), "quick": args.quick},
           "servers": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        log("exporting the model ...")
        hf_dir, out["setup"]["model"] = export_model(Path(tmp), args.seed)
        for row in args.rows:  # one server at a time
            out["servers"][row] = run_row(row, hf_dir, Path(tmp), args)
    ratios_and_targets(out, args.clients)
    if hasattr(os, "getloadavg"):
        out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table(out), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json or args.out:
        path = args.out or results_path(out, args.quick)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        log(f"written to {path}")
    if args.json:
        print(json.dumps(out))
    return 0 if any(r.get("status") == "ok" for r in out["servers"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
