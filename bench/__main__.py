"""`python -m bench [--json] [--quick] ...`: lmforge beside transformers and nanoGPT in one run.

The parent process probes the machine, tokenises the text once, then runs every measurement in a
fresh subprocess (bench/worker.py), peers interleaved (bench/jobs.py), and prints the table
(stdout, or stderr with --json) and, with --json, one JSON object on stdout (bench/report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench import jobs, probes, report, tokens as data
from bench.peers import NAMES
from bench.peers.base import SHAPES
from bench.peers.nanogpt_peer import find_model_py


def whole(least: int):
    """An argparse type: a whole number of at least `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout; the table goes to stderr")
    ap.add_argument("--quick", action="store_true", help="few steps and tokens, one round: a smoke test")
    ap.add_argument("--only", help="comma list of sections: train, greedy, sample, precision (aliases: decode, bf16, memory, all)")
    ap.add_argument("--peers", default="lmforge,transformers,transformers_static_compiled,nanogpt,lmforge_compiled",
                    help="comma list of peers to include (default: all five); --only decode-compile with "
                    "--peers lmforge,lmforge_compiled times the native step beside torch.compile alone")
    ap.add_argument("--nanogpt", help="folder (or model.py) of a nanoGPT checkout; default $NANOGPT_DIR")
    ap.add_argument("--device", default="auto", help="auto (default: cuda when present), cpu or cuda; "
                    "on cuda every peer trains with bf16 autocast and torch.compile")
    ap.add_argument("--shape", choices=tuple(SHAPES), default="small",
                    help="small (default: 6 x 384, vocabulary 8192, context 256) or gpt2 (124M: 12 x 768, "
                    "vocabulary 50257, context 1024, for a GPU); batch 8 for training")
    ap.add_argument("--decode-batch", type=whole(1), help="prompts in the sampled decode (default 8; e.g. 32 on a GPU)")
    ap.add_argument("--steps", type=whole(1), help="timed training steps per job (default 20; --quick 3)")
    ap.add_argument("--warmup", type=whole(0), help="untimed training steps first (default 3; --quick 1)")
    ap.add_argument("--windows", type=whole(1), help="timed windows the steps are split into (default 5; --quick 3)")
    ap.add_argument("--new-tokens", type=whole(1), help="tokens generated per decode (default 200; --quick 48)")
    ap.add_argument("--repeats", type=whole(1), help="timed generations per decode job (default 3; --quick 1)")
    ap.add_argument("--rounds", type=whole(1), help="interleaved rounds over all peers (default 2; --quick 1)")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="the precision row on CPU: auto (default) runs it when bf16 matmuls are faster than fp32")
    ap.add_argument("--compile", action="store_true",
                    help="on cpu too, every peer trains through torch.compile (default: on cuda only, as "
                    "lmforge's train.compile=auto does)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (the static-cache row; CUDA training)")
    ap.add_argument("--threads", type=whole(1), help="torch threads in every worker (default: torch's choice)")
    ap.add_argument("--data", type=Path, help=f"text to tokenise (default {data.DEFAULT_TEXT})")
    ap.add_argument("--seed", type=int, default=1337, help="init, batches, prompts and sampling (default 1337)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before one measurement is abandoned (default 900)")
    args = ap.parse_args(argv)
    quick = args.quick
    for name, full, small in (("steps", 20, 3), ("warmup", 3, 1), ("windows", 5, 3), ("new_tokens", 200, 48),
                              ("repeats", 3, 1), ("rounds", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.windows = max(1, min(args.windows, args.steps))
    return args


def machine_meta(device: torch.device) -> dict:
    cpu = platform.processor() or "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": str(device), "cpu": cpu,
            "python": platform.python_version(), "torch": torch.__version__}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    try:
        import transformers

        meta["transformers"] = transformers.__version__
    except ImportError:
        meta["transformers"] = None
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=data.REPO, capture_output=True, text=True).stdout.strip()
        meta["lmforge_commit"] = git("rev-parse", "--short", "HEAD") + (" (modified)" if git("status", "--porcelain", "lmforge") else "")
    except OSError:
        meta["lmforge_commit"] = None
    return meta


def quiet_machine_warnings(drift: float, load_start: float | None, device: torch.device) -> list[str]:
    """Say so when the machine was not quiet: figures taken at different moments then disagree."""
    out = []
    if abs(drift - 1) > 0.2:
        out.append(f"the matmul probe ran at {drift:.2f}x its starting speed after the run: the machine's "
                   "load changed, so rows measured at different moments are not comparable; rerun when it is idle")
    cores = os.cpu_count() or 1
    if device.type == "cpu" and load_start is not None and load_start > 0.75 * cores:
        out.append(f"the 1-minute load average was {load_start:.1f} on {cores} cores when the run began: "
                   "other processes were competing for the CPU")
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    log = lambda *a, end="\n": print(*a, end=end, file=sys.stderr if args.json else sys.stdout, flush=True)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but CUDA is not available here; use --device cpu")
    sections = jobs.parse_sections(args.only)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in NAMES]
    if unknown:
        raise SystemExit(f"--peers: unknown peer {unknown[0]!r}; use a comma list of {', '.join(NAMES)}")
    shape = SHAPES[args.shape]
    decode_batch = args.decode_batch or shape.batch_size
    main_dtype = "bfloat16" if device.type == "cuda" else "float32"
    other_dtype = "float32" if main_dtype == "bfloat16" else "bfloat16"
    skipped: dict = {}

    model_py = find_model_py(args.nanogpt)
    if "nanogpt" in peers and model_py is None:
        where = args.nanogpt or "$NANOGPT_DIR (unset)"
        skipped["nanogpt"] = f"no nanoGPT model.py at {where}; pass --nanogpt PATH to a checkout to add its rows"
        peers.remove("nanogpt")
    for compiled in ("transformers_static_compiled", "lmforge_compiled"):
        if args.no_compile and compiled in peers:
            skipped[compiled] = "--no-compile"
            peers.remove(compiled)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    log("probing the machine (matmul, memory copy, bf16) ...")
    probe = probes.run_all(device, bf16=args.bf16 != "off" or device.type == "cuda")
    if "precision" in sections and device.type == "cpu":
        if args.bf16 == "off":
            skipped["precision"] = "--bf16 off"
        elif args.bf16 == "auto" and probe["bf16_speedup"] <= 1.0:
            skipped["precision"] = (f"bfloat16 matmuls run at {probe['bf16_speedup']:.3g}x float32 on this CPU "
                                    "(lmforge.runtime.bf16_speedup); --bf16 on forces the row")
    if "precision" in skipped:
        sections.remove("precision")

    from bench.peers.lmforge_peer import LmforgePeer

    torch.manual_seed(args.seed)
    ref = LmforgePeer(shape, torch.device("cpu"))
    model = {"params": ref.n_params(), "flops_per_token": ref.flops_per_token(), "weight_bytes": ref.weight_bytes()}
    del ref

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        log("tokenising ...")
        data_info = data.prepare(args.data, min(shape.vocab_size, data.MAX_TEXT_VOCAB), Path(tmp), args.seed)
        base = {"device": str(device), "shape": dataclasses.asdict(shape), "tokens_path": data_info["path"],
                "nanogpt": str(model_py) if model_py else None, "seed": args.seed, "threads": args.threads,
                "dtype": main_dtype, "compile": (device.type == "cuda" or args.compile) and not args.no_compile,
                "warmup": args.warmup, "windows": args.windows, "steps_per_window": max(1, args.steps // args.windows),
                "new_tokens": args.new_tokens, "repeats": args.repeats, "prompt_tokens": 16, "decode_batch": decode_batch,
                "temperature": 1.0, "top_k": 50}
        # the precision row needs lmforge in the main dtype too: the train section's run, or its own
        precision_dtypes = [other_dtype] if "train" in sections and "lmforge" in peers else [main_dtype, other_dtype]
        plan = jobs.plan(sections, peers, args.rounds, base, precision_dtypes)
        log(f"{len(plan)} measurements, each in a fresh process:")
        jobs.run_all(plan, args.timeout, log)
    probe["matmul_fp32_flops_after"] = probes.matmul_flops(device)  # drift check: the same probes after the run
    probe["copy_bytes_per_s_after"] = probes.copy_bandwidth(device)
    probe["drift_after_over_before"] = probe["matmul_fp32_flops_after"] / probe["matmul_fp32_flops"]
    warnings = quiet_machine_warnings(probe["drift_after_over_before"], load_start, device)

    meta = machine_meta(device)
    meta.update(dtype=main_dtype, threads=args.threads or torch.get_num_threads(), shape=dataclasses.asdict(shape),
                quick=args.quick, argv=sys.argv[1:], train_compiled=base["compile"], shape_name=args.shape, data={k: v for k, v in data_info.items() if k != "path"},
                steps={"warmup": args.warmup, "timed": base["steps_per_window"] * args.windows,
                       "windows": args.windows, "rounds": args.rounds},
                decode={"prompt_tokens": 16, "new_tokens": args.new_tokens, "repeats": args.repeats,
                        "sample_batch": decode_batch,
                        "temperature": 1.0, "top_k": 50})
    if model_py:
        meta["nanogpt_model_py"] = {"path": str(model_py),
                                    "sha256": hashlib.sha256(model_py.read_bytes()).hexdigest()[:16]}
    cells = report.gather(plan)
    model["params_by_peer"] = {p: c["params"] for (s, p), c in cells.items() if "params" in c and "@" not in p}
    hf = next((c.get("attention") for (s, p), c in cells.items() if c.get("attention")), None)
    meta["transformers_attention"] = hf
    meta["lmforge_decode_step"] = next((c["decode_step"] for (s, p), c in cells.items() if p == "lmforge" and c.get("decode_step")), None)
    meta["loadavg_1min"] = {"start": load_start, "end": os.getloadavg()[0] if load_start is not None else None}
    out = report.build(cells, sections, probe, model, meta, skipped, (main_dtype, other_dtype))
    out["warnings"] = warnings
    log("")
    log(report.table(out))
    if args.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
