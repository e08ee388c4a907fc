"""`lmforge quickstart`, `train`, `eval` and `plot`: pretraining from a recipe, scoring what it made,
and drawing runs' curves."""

from __future__ import annotations

import re
from pathlib import Path

from lmforge.cli.output import emit, logger
from lmforge.errors import Diverged, LmforgeError

TRAIN_ADVICE = "lower train.lr (e.g. --set train.lr=3e-4) or raise train.warmup_steps, then start again"


def quickstart_dir(corpus: str) -> str:
    """runs/quickstart, or runs/quickstart-NAME for another corpus: its name, or its file's or folder's
    stem (a path or glob must not make nested folders)."""
    if corpus == "shakespeare":
        return "runs/quickstart"
    plain = [part for part in Path(corpus).parts if not any(c in part for c in "*?[")]  # a glob's folder
    name = re.sub(r"[^\w.-]+", "-", Path(plain[-1]).stem if plain else "").strip("-.") or "corpus"
    return f"runs/quickstart-{name}"


def cmd_quickstart(args) -> None:
    from lmforge.quickstart import run_quickstart

    out = args.out or quickstart_dir(args.corpus)
    try:
        r = run_quickstart(args.corpus, out, args.set, log=logger(args), progress=not args.json)
    except Diverged as e:
        raise e.advise(TRAIN_ADVICE) from None
    lines = [
        "",
        f"validation perplexity on {r['val_tokens']:,} tokens of {r['corpus']}:",
        f"  untrained model  {r['untrained']['perplexity']:10.1f}",
        f"  bigram model     {r['bigram']['perplexity']:10.1f}",
        f"  trained GPT      {r['trained']['perplexity']:10.1f}   ({r['trained']['bits_per_byte']:.3f} bits per byte)",
        f"{r['steps']} steps in {r['train_seconds']:.0f} s at {r['tokens_per_s']:,.0f} tokens/s; "
        f"{r['parameters'] / 1e6:.2f}M parameters; total {r['seconds']:.0f} s",
        f"precision: {r['dtype']} ({r['dtype_reason']})",
        "",
    ]
    for s in r["samples"]:
        lines += [f"--- sample (prompt {s['prompt']!r}) ---", s["prompt"] + s["text"], ""]
    lines.append(f"the model is in {r['run_dir']}: try `lmforge generate {r['run_dir']} \"your prompt\"`")
    emit(args, r, "\n".join(lines))


def resumed_recipe(out: Path, sets: list[str]):
    """The run's own recipe with `sets` applied; a --set that changes a model or data setting (which
    the saved weights and token shards are bound to) is refused, one equal to the run's value is not."""
    from lmforge.config import load_recipe

    saved = load_recipe(str(out / "recipe.yaml"))
    recipe = load_recipe(str(out / "recipe.yaml"), sets)
    for section, same in (("model", recipe.model_config(1) == saved.model_config(1)), ("data", recipe.data == saved.data)):
        if not same:
            item = next(s for s in sets if s.strip().startswith(f"{section}."))
            raise LmforgeError(f"--set {item} would change the model or its data, which a resumed run keeps; change only "
                               "train.* settings with --resume, or start a new run with another --out")
    if not any(s.strip().startswith("train.progress") for s in sets):
        recipe.train.progress = True  # an earlier --json run saved it off
    return recipe


def train_recipe(args, out: Path):
    from lmforge.config import load_recipe
    from lmforge.checkpoint import is_checkpoint

    if args.resume:
        if not is_checkpoint(out):
            raise LmforgeError(f"{out} holds no checkpoint to resume; run without --resume, or give the run with --out")
        return resumed_recipe(out, args.set)
    if is_checkpoint(out):
        raise LmforgeError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
    return load_recipe(args.recipe, args.set)


def cmd_train(args) -> None:
    from lmforge.train import parallel
    from lmforge.train.pretrain import pretrainer
    from lmforge.train.trainer import held_run_dir

    out = Path(args.out or f"runs/{Path(args.recipe).stem}")
    log = logger(args)
    with held_run_dir(out, "lmforge train"), parallel.world_session():
        recipe = train_recipe(args, out)
        if args.json:
            recipe.train.progress = False
        trainer = pretrainer(recipe, out, resume=args.resume, log=log)
        m = trainer.model
        log(f"training {m.num_params() / 1e6:.2f}M parameters ({m.flops_per_token() / 1e6:.1f} MFLOP per token) "
            f"on {trainer.device}{' (compiled at the first step)' if trainer.compile_pending else ''}, "
            f"{recipe.train.max_steps} steps -> {out}")
        try:
            res = trainer.fit()
        except Diverged as e:
            raise e.advise(TRAIN_ADVICE) from None
        last = res.evals[-1] if res.evals else trainer.evaluate(full=True)
    r = {"run_dir": str(out), "steps": res.steps, **{f"val_{k}": v for k, v in last.items() if k != "step"},
         "tokens_per_s": round(res.tokens_per_s, 1), "seconds": round(res.seconds, 1), "parameters": res.n_params,
         "flops_per_token": res.flops_per_token, "stopped_early": res.stopped_early, "compiled": res.compiled}
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in last.items()
                      if k in ("perplexity", "bits_per_byte", "mlm_accuracy", "nsp_accuracy", "rtd_accuracy"))
    emit(args, r, f"step {res.steps}: validation loss {r['val_loss']:.4f}, {shown}; {r['tokens_per_s']:,.0f} "
                  f"tokens/s over {r['seconds']:.0f} s; saved in {out}")


def _scored_text(args, lm):
    """(tokens, bytes, source) of the text `eval` scores: --file (cleaned as the run's training text
    was), or the run's own validation split."""
    from lmforge.config import load_recipe

    recipe = Path(args.run) / "recipe.yaml"
    if args.file:
        from lmforge.data.clean import clean_documents
        from lmforge.data.corpora import load_corpus
        from lmforge.data.shards import encode_documents

        docs = load_corpus(args.file, column=args.column).documents
        if recipe.is_file() and load_recipe(str(recipe)).data.clean:
            docs = clean_documents(docs, dedupe=False)[0]
        n_bytes = sum(len(d.encode("utf-8", "surrogatepass")) for d in docs)
        return encode_documents(lm.tokenizer, docs), n_bytes, args.file
    from lmforge.data.shards import prepare

    if not recipe.is_file():
        raise LmforgeError(f"{args.run} has no recipe.yaml, so it has no validation split of its own (a Hugging "
                           "Face directory, or a run saved without one); give the text to score with --file")
    data = prepare(load_recipe(str(recipe)).data, tokenizer=lm.tokenizer, log=logger(args))
    return data.val, data.meta["val_bytes"], f"validation split of {load_recipe(str(recipe)).data.corpus}"


def cmd_eval(args) -> None:
    import lmforge
    from lmforge.evaluate.perplexity import evaluate_lm

    if args.batch_size < 1:
        raise LmforgeError(f"--batch-size must be 1 or more, not {args.batch_size}")
    lm = lmforge.load(args.run)
    if lm.config.head != "none":
        raise LmforgeError(f"{args.run} is fine-tuned for {lm.config.head!r}: eval scores language models and "
                           "pretrained encoders; score it on labelled rows with `lmforge predict RUN --file FILE` "
                           "(its test figures are in report.json)")
    if not lm.config.causal:
        return _eval_encoder(args, lm)
    tokens, n_bytes, source = _scored_text(args, lm)
    r = evaluate_lm(lm.model, tokens, lm.config.context_length, batch_size=args.batch_size,
                    bytes_per_token=n_bytes / max(1, len(tokens)))
    r["source"] = source
    emit(args, r, f"{source}: {r['tokens']:,} tokens, loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f}, "
                  f"bits per byte {r['bits_per_byte']:.4f}")


def _eval_encoder(args, lm) -> None:
    """An encoder's own objective (MLM / NSP / RTD accuracy) on every batch of its validation split."""
    from lmforge.config import load_recipe
    from lmforge.tasks.pretrain import pretraining_task
    from lmforge.train.pretrain import objective_for, prepare_data

    if args.file or not (Path(args.run) / "recipe.yaml").is_file():
        raise LmforgeError("eval scores an encoder on the validation split of the run that trained it; give an lmforge "
                           "run directory without --file, or fine-tune it and read report.json")
    recipe = load_recipe(str(Path(args.run) / "recipe.yaml"))
    objective = objective_for(recipe, lm.config.family)
    data = prepare_data(recipe, objective, lm.tokenizer, logger(args))
    r = pretraining_task(recipe, objective, data, lm.config).evaluate(lm.model, full=True)
    r["source"] = f"validation split of {recipe.data.corpus}"
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in r.items() if k.endswith("accuracy"))
    emit(args, r, f"{r['source']}: {r['batches']} batches, loss {r['loss']:.4f}, {shown}")


def cmd_plot(args) -> None:
    from lmforge.train.logging import plot_runs

    r = plot_runs(args.runs, args.out, args.metric, args.x)
    emit(args, r, f"{args.metric} of {len(r['runs'])} run{'s' * (len(r['runs']) > 1)} against {args.x} drawn to "
         f"{r['out']}")


def add_commands(sub, command, json_flag) -> None:
    q = command("quickstart", cmd_quickstart, "train a BPE tokenizer and a small GPT on a built-in corpus, evaluate "
                "it, sample from it")
    q.add_argument("--corpus", default="shakespeare", help="built-in corpus or local path (default: shakespeare; try "
                   "peoples-daily)")
    q.add_argument("--out", help="run directory, which must not hold a run yet (default: runs/quickstart)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value, e.g. "
                   "train.max_steps=500")
    json_flag(q)
    tr = command("train", cmd_train, "train a model from a YAML recipe")
    tr.add_argument("--recipe", default="quickstart", help="a YAML file, or a shipped recipe name (quickstart, "
                    "shakespeare-char)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value, e.g. "
                    "train.lr=3e-4 (repeatable)")
    tr.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (its "
                    "own recipe; --set may change train.* settings)")
    json_flag(tr)
    e = command("eval", cmd_eval, "perplexity and bits per byte of a GPT; MLM, NSP or RTD accuracy of an encoder run")
    e.add_argument("run", help="run directory")
    e.add_argument("--file", help="text to score (a file, folder or glob); default: the run's validation split")
    e.add_argument("--column", help="text column of a .jsonl/.csv/.tsv file")
    e.add_argument("--batch-size", type=int, default=8)
    json_flag(e)
    pl = command("plot", cmd_plot, "draw one metric of several runs' metrics.jsonl in one PNG (for comparing runs "
                 "without TensorBoard)")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    pl.add_argument("--metric", default="val_loss", help="a metrics.jsonl key: val_loss (default), loss, lr, "
                    "grad_norm, tokens_per_s, val_<the task's metric>, ...")
    pl.add_argument("--x", choices=["step", "tokens"], default="step", help="the x axis: optimiser steps (default) or "
                    "tokens trained on")
    pl.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    json_flag(pl)
