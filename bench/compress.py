"""`python -m bench.compress [--json] [--quick]`: what each compression costs and gains, in one run.

A GPT of the bench's shape (6 layers, 384 wide, 6 heads, vocabulary 8,192, context 256) trains for a
few minutes on tinyshakespeare; then, each through the `lmforge` command a user runs: int8, int4
(groups of 64), 50% magnitude, 50% Wanda, 2:4 (Wanda), and a half-depth student distilled from it
beside the same student trained on the text alone for the same steps. `lmforge compress-report`
measures them all (size, weights, decode tokens/s at batch 1 and 8, validation perplexity). A MiniLM
fine-tuned on BBC News and its int8 copy are scored on their test split the same way.

The peer: the same trained weights exported to Hugging Face and run by `transformers` with PyTorch's
dynamic int8 quantisation (`torch.ao.quantization.quantize_dynamic` on every Linear; GPT-2's Conv1D
layers are turned into Linear first, the same products), decoded greedily at batch 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.classify import FINETUNE, LMFORGE, fill, find_minilm, machine, run_lmforge
from bench.classify_data import log, prepare

SHAPE = ["model.preset=gpt-small", "model.n_layer=6", "model.n_head=6", "model.d_model=384",
         "model.context_length=256", "model.dropout=0.0", "data.vocab_size=8192", "data.tokenizer=bpe"]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.compress", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout; the table goes to stderr")
    ap.add_argument("--quick", action="store_true", help="a minute of training, few steps: the pipeline only")
    ap.add_argument("--train-minutes", type=float, default=20.0, help="the GPT's training time (default 20: a teacher "
                    "must have trained well past its students' steps, or there is nothing to distil)")
    ap.add_argument("--student-steps", type=int, default=300, help="steps of each half-depth student (default 300)")
    ap.add_argument("--no-classifier", action="store_true", help="skip the MiniLM rows")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-compress"))
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--reuse", action="store_true", help="keep the runs already in --work (measure again only)")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args(argv)
    if args.quick:
        args.train_minutes, args.student_steps = 0.5, 20
    return args


def lmforge(argv: list[str], what: str, args) -> dict:
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    if args.reuse and out is not None and (out / "config.json").is_file():
        log(f"[{what}] reusing {out}")
        return {}
    run = run_lmforge(LMFORGE + argv, what, args.timeout)
    if "error" in run:
        raise RuntimeError(f"{what}: {run['error']}")
    return run["result"]


def sets(items: list[str]) -> list[str]:
    return [x for s in items for x in ("--set", s)]


def gpt_runs(args) -> dict[str, Path]:
    """The trained GPT and every compressed copy, by row name."""
    w = args.work
    corpus = str(DATA) if DATA.is_file() else "shakespeare"
    train = [*SHAPE, f"data.corpus={corpus}", f"train.time_limit_minutes={args.train_minutes}",
             "train.max_steps=100000", f"train.seed={args.seed}"]
    lmforge(["train", "--recipe", "quickstart", *sets(train), "--out", str(w / "fp32"), "--json"], "train", args)
    base = str(w / "fp32")
    jobs = {"int8": ["quantize", base, "--bits", "8"], "int4-g64": ["quantize", base, "--bits", "4", "--group-size", "64"],
            "magnitude-50": ["prune", base, "--sparsity", "0.5"],
            "wanda-50": ["prune", base, "--sparsity", "0.5", "--method", "wanda"],
            "wanda-2:4": ["prune", base, "--structure", "2:4", "--method", "wanda"]}
    student = ["model.n_layer=3", f"train.max_steps={args.student_steps}", "train.time_limit_minutes=0",
               f"train.eval_every={args.student_steps}", "train.warmup_steps=20"]
    for name, alpha in (("distilled-3", "0.5"), ("scratch-3", "0")):
        jobs[name] = ["distill", "--teacher", base, "--student-preset", "gpt-small", *sets(student), "--alpha", alpha]
    runs = {"fp32": w / "fp32"}
    for name, argv in jobs.items():
        runs[name] = w / name.replace(":", "")
        lmforge([*argv, "--out", str(runs[name]), "--json"], name, args)
    return runs


def peer_int8(run: Path, work: Path, new_tokens: int = 128) -> dict:
    """transformers + dynamic int8 of the exported model: greedy tokens/s at batch 1 (best of 5, as lmforge's)."""
    import torch
    import transformers
    from transformers.pytorch_utils import Conv1D

    from lmforge.api import export_hf

    hf = work / "hf-fp32"
    if not hf.is_dir():
        export_hf(str(run), hf)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, attn_implementation="sdpa").eval()
    for name, m in list(model.named_modules()):
        if isinstance(m, Conv1D):  # (in, out) weights: the same product as a Linear of the transpose
            lin = torch.nn.Linear(m.weight.shape[0], m.weight.shape[1])
            lin.weight.data, lin.bias.data = m.weight.data.t().contiguous(), m.bias.data
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, lin)
    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    ids = torch.tensor([[(7 * i) % model.config.vocab_size for i in range(16)]])
    best = {}
    for name, m in (("transformers_fp32", model), ("transformers_int8_dynamic", q)):
        with torch.no_grad():
            m.generate(ids, max_new_tokens=4, do_sample=False)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                out = m.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
                times.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - t))
        best[name] = max(times)
    return {"tokens_per_s_1": best, "transformers": transformers.__version__, "torch": torch.__version__}


def classifier_runs(args) -> dict[str, Path] | str:
    minilm, why = find_minilm(None)
    if minilm is None:
        return why
    args.rows, args.quick = (250 if args.quick else 600), False
    data = prepare("bbc", args)
    out = args.work / "minilm"
    argv = fill(FINETUNE, base=minilm, data=data["csv"], max_length=128, epochs=1 if args.quick else 2,
                batch_size=16, lr=5e-5, seed=args.seed, out=out)
    if not (args.reuse and (out / "config.json").is_file()):
        run = run_lmforge(argv, "minilm finetune", args.timeout)
        if "error" in run:
            return run["error"]
    lmforge(["quantize", str(out), "--bits", "8", "--out", str(args.work / "minilm-int8"), "--json"], "minilm int8", args)
    return {"minilm-fp32": out, "minilm-int8": args.work / "minilm-int8"}


def targets(rows: dict, peer: dict) -> dict:
    """The issue's targets, each with the measured value."""
    f, i8, i4 = rows["fp32"], rows["int8"], rows["int4-g64"]
    out = {"int8_speedup": i8["tokens_per_s_1"] / f["tokens_per_s_1"],
           "int8_perplexity_change": i8["perplexity"] / f["perplexity"] - 1,
           "int4_speedup": i4["tokens_per_s_1"] / f["tokens_per_s_1"],
           "int4_perplexity_change": i4["perplexity"] / f["perplexity"] - 1,
           "wanda_below_magnitude": rows["wanda-50"]["perplexity"] < rows["magnitude-50"]["perplexity"],
           "distilled_below_scratch": rows["distilled-3"]["perplexity"] < rows["scratch-3"]["perplexity"],
           "int8_vs_transformers_int8": i8["tokens_per_s_1"] / peer["tokens_per_s_1"]["transformers_int8_dynamic"]}
    if "minilm-int8" in rows:
        out["minilm_int8_accuracy_change"] = rows["minilm-int8"]["accuracy"] - rows["minilm-fp32"]["accuracy"]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if any(args.work.iterdir()) and not args.reuse:
        raise SystemExit(f"{args.work} is not empty; remove it, give another --work, or --reuse its runs")
    t0 = time.perf_counter()
    runs = gpt_runs(args)
    report = lmforge(["compress-report", *map(str, runs.values()), "--plot", str(args.work / "gpt.png"), "--json"],
                     "report", args)
    rows = dict(zip(runs, report["rows"]))
    peer = peer_int8(runs["fp32"], args.work)
    result = {"machine": machine(), "quick": args.quick, "train_minutes": args.train_minutes,
              "student_steps": args.student_steps, "gpt": rows, "peer": peer}
    if not args.no_classifier:
        cls = classifier_runs(args)
        if isinstance(cls, str):
            result["classifier_skipped"] = cls
        else:
            rep = lmforge(["compress-report", *map(str, cls.values()), "--plot", str(args.work / "minilm.png"),
                           "--json"], "classifier report", args)
            rows.update(dict(zip(cls, rep["rows"])))
    result["targets"] = targets(rows, peer)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = "\n".join(f"{k:<28} " + json.dumps({m: r.get(m) for m in ("bytes", "tokens_per_s_1", "tokens_per_s_8",
                                                                        "perplexity", "accuracy")})
                     for k, r in rows.items()) + "\n" + json.dumps(result["targets"], indent=1)
    log(text)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
