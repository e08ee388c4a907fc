"""`python -m bench.dropout [--json]`: lmforge's CPU dropout beside torch's, side by side in one run.

Forward and backward of dropout (p = 0.1) on the tensors a BERT-base-like training step drops: one
layer's attention weights (batch 16, 12 heads, 128 x 128) and its hidden states (16 x 128 x 768),
in float32 and in bfloat16. Each row alternates the two implementations over `--repeats` rounds
and keeps the fastest of each (other programs only ever slow one down); the ratio is torch / lmforge.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from bench.classify import machine
from lmforge.nn.dropout import dropout

SHAPES = {"attention weights": (16, 12, 128, 128), "hidden states": (16, 128, 768)}


def timed(fn, x: torch.Tensor) -> float:
    t = time.perf_counter()
    y = fn(x, 0.1)
    y.backward(torch.ones_like(y))
    x.grad = None
    return time.perf_counter() - t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.dropout", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout; the table goes to stderr")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    peers = {"torch": lambda x, p: F.dropout(x, p, training=True), "lmforge": dropout}
    rows = []
    for name, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            best = {k: float("inf") for k in peers}
            for _ in range(args.repeats + 1):  # the first round warms up and counts like the others
                for k, fn in peers.items():
                    best[k] = min(best[k], timed(fn, x))
            rows.append({"tensor": name, "shape": list(shape), "dtype": str(dtype).split(".")[1],
                         **{f"{k}_ms": round(v * 1e3, 2) for k, v in best.items()},
                         "ratio": round(best["torch"] / best["lmforge"], 2)})
    out = sys.stderr if args.json else sys.stdout
    print(f"{'tensor':<18} {'dtype':<9} {'torch ms':>9} {'lmforge ms':>11} {'ratio':>6}", file=out)
    for r in rows:
        print(f"{r['tensor']:<18} {r['dtype']:<9} {r['torch_ms']:>9} {r['lmforge_ms']:>11} {r['ratio']:>5}x", file=out)
    result = {"machine": {**machine(), "torch": torch.__version__, "threads": torch.get_num_threads()},
              "p": 0.1, "rows": rows}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
