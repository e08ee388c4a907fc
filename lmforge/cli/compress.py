"""`lmforge quantize`, `prune`, `distill` and `compress-report`: smaller models and what they cost."""

from __future__ import annotations

from pathlib import Path

from lmforge.cli.output import emit, logger


def cmd_quantize(args) -> None:
    from lmforge.compress.quantize import quantize_run

    r = quantize_run(args.run, args.out, args.bits, args.group_size, args.symmetric, args.keep_head, args.calibration)
    group = f"groups of {r['group_size']}" if r["group_size"] else "one scale per output row"
    kind = "symmetric" if r["symmetric"] else "with zero points"
    emit(args, r, f"quantised {r['layers']} layers to int{r['bits']} ({group}, {kind}, {r['method']}): "
                  f"{r['bytes_before'] / 1e6:.1f} MB -> {r['bytes_after'] / 1e6:.1f} MB ({r['ratio']:.2f}x smaller) "
                  f"in {r['out']}")


def cmd_prune(args) -> None:
    from lmforge.compress.prune import prune_run

    then = None
    if args.recover_steps:
        from lmforge.train.recover import check_recovery, recover

        check_recovery(args.run, args.recover_steps)
        then = lambda model, masks: recover(model, args.run, args.out, args.recover_steps, masks, logger(args))  # noqa: E731
    r = prune_run(args.run, args.out, args.sparsity, args.method, args.structure, args.calibration, then)
    if r["structure"] in ("heads", "neurons"):
        what = f"d_ff {r['d_ff']}" if r["structure"] == "neurons" else f"{r['n_head']} heads"
        done = f"removed {r['structure']} by {r['method']} ({what} per layer)"
    else:
        done = f"set {r['zero_fraction']:.1%} of the layers' weights to zero ({r['structure']}, {r['method']})"
    rec = r["recovery"]
    then = f"; {rec['steps']} recovery steps: validation loss {rec['val_loss_before']:.4f} -> " \
           f"{rec['val_loss_after']:.4f}" if rec else ""
    emit(args, r, f"{done}: {r['parameters_before']:,} -> {r['parameters_after']:,} parameters{then}; in {r['out']}")


def cmd_distill(args) -> None:
    from lmforge.train.distill import distill_run

    sets = [*args.set, "train.progress=false"] if args.json else args.set
    r = distill_run(args.teacher, args.out, args.student_preset, args.temperature, args.alpha, sets, log=logger(args))
    if r["kind"] == "language model":
        v, t = r["validation"], r["teacher_validation"]
        scores = f"validation perplexity {v['perplexity']:.2f} (the teacher's {t['perplexity']:.2f})"
    else:
        scores = f"test accuracy {r['test']['accuracy']:.3f}"
    emit(args, r, f"distilled {r['teacher_parameters']:,} parameters into {r['student_parameters']:,} "
                  f"(T={r['temperature']}, alpha={r['alpha']}): {scores}; in {args.out}")


def cmd_compress_report(args) -> None:
    from lmforge.compress.report import compress_report
    from lmforge.train.finetune import test_split_scores

    r = compress_report(args.runs, args.file, args.plot, test_split_scores)
    lines = [f"{'run':<28} {'MB':>8} {'params':>11} {'tok/s b1':>9} {'tok/s b8':>9} {'quality':>10}  change"]
    for row in r["rows"]:
        quality = f"ppl {row['perplexity']:.2f}" if "perplexity" in row else f"acc {row['accuracy']:.3f}"
        speed = [f"{row[k]:9.0f}" if row[k] is not None else f"{'-':>9}" for k in ("tokens_per_s_1", "tokens_per_s_8")]
        change = ", ".join(f"{k} {v:+.1f}%" for k, v in row["change_percent"].items() if v)
        lines.append(f"{Path(row['run']).name[:28]:<28} {row['bytes'] / 1e6:8.2f} {row['parameters']:11,} {speed[0]} "
                     f"{speed[1]} {quality:>10}  {change}")
    if r["plot"]:
        lines.append(f"plot: {r['plot']}")
    emit(args, r, "\n".join(lines))


def add_commands(sub, command, json_flag) -> None:
    q = command("quantize", cmd_quantize, "store a model's weights as int8 or int4 (weight-only; activations stay "
                                          "float): an ordinary run every command takes")
    q.add_argument("run", help="run directory (or a Hugging Face directory)")
    q.add_argument("--bits", type=int, required=True, help="8 (one scale per output row) or 4 (grouped)")
    q.add_argument("--group-size", type=int, help="inputs sharing one scale (default: 64 for int4, the whole row "
                                                  "for int8); must divide every layer's width")
    q.add_argument("--symmetric", action="store_true", help="int4 without zero points (w = s (u - 8)); int8 is "
                                                            "always symmetric")
    q.add_argument("--keep-head", action="store_true", help="keep the output head (lm_head) in float")
    q.add_argument("--calibration", metavar="FILE", help="text like the model's own: each group's range is then "
                                                         "clipped where that lowers the error on it")
    q.add_argument("--out", required=True, help="output directory; must not exist or be empty")
    json_flag(q)

    p = command("prune", cmd_prune, "zero the weights that matter least (unstructured, 2:4), or remove whole heads or "
                                    "MLP neurons so the matrices shrink")
    p.add_argument("run", help="run directory (or a Hugging Face directory)")
    p.add_argument("--sparsity", type=float, help="the fraction of weights (or of each layer's heads or neurons) to "
                                                  "remove, in [0, 1); 2:4 is 0.5")
    p.add_argument("--method", default="magnitude", help="magnitude (|W|) or wanda (|W| times the input's norm on "
                                                          "calibration text); default magnitude")
    p.add_argument("--structure", default="unstructured", help="unstructured, 2:4, heads or neurons; default "
                                                               "unstructured")
    p.add_argument("--calibration", metavar="FILE", help="text like the model's own, for wanda (default: the start "
                                                         "of the run's training split)")
    p.add_argument("--recover-steps", type=int, default=0, help="then train this many steps on the run's own text "
                                                                 "(its recipe, a tenth of its learning rate; zeroed "
                                                                 "weights stay zero); default 0")
    p.add_argument("--out", required=True, help="output directory; must not exist or be empty")
    json_flag(p)

    d = command("distill", cmd_distill, "train a smaller student on a teacher's own data and its distributions "
                                        "(a GPT's next tokens, a classifier's classes)")
    d.add_argument("--teacher", required=True, help="the teacher's run directory (its recipe.yaml names the data)")
    d.add_argument("--student-preset", required=True, metavar="P", help="a model preset (e.g. gpt-mini), built with "
                                                                         "the teacher's tokenizer, or a run directory "
                                                                         "with the teacher's tokenizer")
    d.add_argument("--temperature", type=float, default=2.0, help="softens both distributions (default 2)")
    d.add_argument("--alpha", type=float, default=0.5, help="the teacher's share of the loss; 0: the labels alone, "
                                                            "the control (default 0.5)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the teacher's recipe for the student, e.g. model.n_layer=2 or train.max_steps=500")
    d.add_argument("--out", required=True, help="output directory; must not exist or be empty")
    json_flag(d)

    c = command("compress-report", cmd_compress_report, "size, parameters, decode speed and quality of a model and its "
                                                        "compressed copies, with the changes and a plot")
    c.add_argument("runs", nargs="+", metavar="RUN", help="the original run first, then its compressed copies")
    c.add_argument("--file", help="text whose perplexity is the quality (default: each run's validation split); "
                                  "classifiers are scored on their own test split")
    c.add_argument("--plot", default="compress-report.png", help="where the PNG goes (default compress-report.png)")
    json_flag(c)
