"""Training under torchrun: one process plainly against FSDP2 (and DDP where there are several devices).

    python -m bench.parallel --json [--processes 1] [--steps 60] [--preset gpt-small]

Each row trains the same recipe for the same steps from the same seed and reports lmforge's own
tokens/s (evaluation and the first compiled step left out) and the final validation loss. With one
process, `train.parallel=fsdp` shards across a group of one: what FSDP2's machinery (its hooks, the
flat gather and scatter buffers) costs where there is nothing to shard across. With N processes
(N GPUs, or N CPU processes), DDP and FSDP2 rows against the one-process row with grad_accum N: the
same steps, so the ratio of tokens/s is the scaling. Not a test: a measurement, recorded in
bench/results and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.classify import LMFORGE, machine, run_lmforge
from lmforge.config import PRESETS
from bench.classify_data import log

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.parallel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout; progress goes to stderr")
    ap.add_argument("--processes", type=int, default=1, help="processes (one per GPU on CUDA; default 1)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--preset", default="gpt-small")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--corpus", default=str(DATA) if DATA.is_file() else "shakespeare")
    ap.add_argument("--set", action="append", default=[], help="more recipe settings for every row")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-parallel"))
    ap.add_argument("--timeout", type=float, default=3600)
    return ap.parse_args(argv)


def row(args, name: str, processes: int, *sets: str) -> dict:
    shape = [f"model.{k}={v}" for k, v in PRESETS[args.preset].items() if k in ("n_layer", "n_head", "d_model", "d_ff")]
    items = [f"model.preset={args.preset}", *shape, f"model.context_length={args.context}", f"data.corpus={args.corpus}",
             "data.tokenizer=bpe", "data.vocab_size=8192", f"train.batch_size={args.batch_size}",
             f"train.max_steps={args.steps}", f"train.eval_every={args.steps}", "train.eval_batches=4",
             "train.warmup_steps=10", *args.set, *sets]
    command = ["train", "--recipe", "quickstart", "--out", str(args.work / name), "--json",
               *[x for s in items for x in ("--set", s)]]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
              "-m", "lmforge"] if name != "one" else LMFORGE
    run = run_lmforge(launch + command, name, args.timeout)
    if "error" in run:
        return {"error": run["error"]}
    r = run["result"]
    return {"processes": processes, "parameters": r["parameters"], "tokens_per_s": r["tokens_per_s"],
            "val_loss": r["val_loss"], "steps": r["steps"], "seconds": r["seconds"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    n = args.processes
    rows = {"one": row(args, "one", 1, f"train.grad_accum={n}")}
    if n == 1:
        rows["fsdp-1"] = row(args, "fsdp-1", 1, "train.parallel=fsdp")
    else:
        rows[f"ddp-{n}"] = row(args, f"ddp-{n}", n, "train.parallel=ddp")
        rows[f"fsdp-{n}"] = row(args, f"fsdp-{n}", n, "train.parallel=fsdp")
    base = rows["one"].get("tokens_per_s")
    for name, r in rows.items():
        if base and "tokens_per_s" in r:
            r["vs_one"] = round(r["tokens_per_s"] / base, 3)
    out = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1)}
    try:
        import torch

        out["torch"] = torch.__version__
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    for name, r in rows.items():
        log(f"{name:8s} {r}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
