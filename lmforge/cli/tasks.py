"""`lmforge finetune`, `cv`, `predict` and `attention`: labelled tasks, and looking inside a model.

`finetune` and `cv` run a fine-tuning recipe (the shipped `finetune` recipe, under --recipe FILE);
each of their flags is a shorthand for one recipe key (config.SHORTHANDS: --lr is train.lr,
--epochs is task.epochs), and --set sets any key.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.cli.output import emit, logger
from lmforge.errors import Diverged
from lmforge.evaluate.drift import THRESHOLD

FINETUNE_ADVICE = "lower --lr (e.g. --lr 1e-5) and start again with another --out"


def fine_tuning_recipe(args):
    """The recipe a `finetune` / `cv` command line makes: --recipe, then the flags given, then --set."""
    from lmforge.config import SHORTHANDS
    from lmforge.train.finetune import finetune_recipe

    given = {name: getattr(args, name) for name in SHORTHANDS if getattr(args, name, None) is not None}
    if args.json:
        given["progress"] = False
    return finetune_recipe(args.recipe, given, args.set)


def _entities(report: dict, lead: str) -> str:
    """The entity-level figures of a tagging report, when its tags mark entities."""
    e = report.get("entities")
    if not e:
        return ""
    m = e["micro"]
    return (f"{lead}entity-level (CoNLL) precision {m['precision']:.4f}, recall {m['recall']:.4f}, F1 {m['f1']:.4f} "
            f"over {e['gold_entities']} entities")


def _scores(r: dict) -> str:
    """BLEU / chrF / ROUGE-L of a translation or summarisation report, with intervals where given."""
    parts = []
    for key, name in (("bleu", "BLEU"), ("chrf", "chrF"), ("rougeL", "ROUGE-L")):
        if key in r:
            ci = r.get(f"{key}_ci")
            parts.append(f"{name} {r[key]:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
    return ", ".join(parts)


def _generative_summary(report: dict) -> str:
    base = report["baseline"]
    lines = [f"  source: {e['source'][:120]}\n  output: {e['output'][:120]}\n  reference: {e['reference'][:120]}"
             for e in report.get("examples", [])[:2]]
    return "\n".join([*lines, f"test: {_scores(report['test'])} on {report['test_rows']} pairs",
                      f"baseline ({base['name']}): {_scores(base)}",
                      f"{report['train_rows']} train / {report['validation_rows']} validation pairs, "
                      f"{report['steps']} steps in {report['seconds']:.0f} s"])


def _summary(report: dict) -> str:
    test = report["test"]
    from lmforge.evaluate.classification import format_report

    if report["task"] in ("translate", "summarize"):
        return _generative_summary(report)
    if report["task"] == "chat":
        lines = [f"  user: {x['user'][:100]}\n  reply: {x['reply'][:100]}" for x in report["samples"]]
        return "\n".join([*lines, f"test: loss {test['loss']:.4f} (perplexity {test['perplexity']:.1f}) over "
                           f"{test['tokens']:,} assistant tokens of {report['test_rows']} conversations",
                           f"{report['train_rows']} train / {report['validation_rows']} validation conversations, "
                           f"{report['steps']} steps in {report['seconds']:.0f} s"])
    if report["task"] == "qa":
        return f"test: exact match {test['exact_match']:.1f}, F1 {test['f1']:.1f} on {report['test_rows']} rows"
    if report["task"] == "token":
        return (f"{format_report(test)}\n\ntest: word-level accuracy {test['accuracy']:.4f}, macro F1 "
                f"{test['macro']['f1']:.4f} over {test['n']} words of {report['test_rows']} rows"
                + _entities(test, "; "))
    base = report["majority_baseline"]["accuracy"]
    return (f"{format_report(test)}\n\ntest accuracy {test['accuracy']:.4f}, macro F1 {test['macro']['f1']:.4f} "
            f"(majority class: {base:.4f}); {report['train_rows']} train / {report['validation_rows']} "
            f"validation / {report['test_rows']} test rows, {report['steps']} steps in {report['seconds']:.0f} s")


def cmd_finetune(args) -> None:
    from lmforge.train.finetune import finetune_run
    from lmforge.train.parallel import world_session

    recipe = fine_tuning_recipe(args)
    out = Path(args.out or f"runs/finetune-{Path(str(recipe.task.data)).stem}")
    try:
        with world_session():  # under torchrun: the processes' group, left at the end
            report = finetune_run(recipe, out, log=logger(args), resume=args.resume)
    except Diverged as e:
        raise e.advise(FINETUNE_ADVICE) from None
    report["run_dir"] = str(out)
    files = "report.json and confusion.png" if report["task"] in ("classify", "token") else "report.json"  # classes only
    emit(args, report, _summary(report) + f"\nthe best checkpoint, {files} are in {out}")


def cmd_cv(args) -> None:
    from lmforge.train.finetune import cross_validate_run

    recipe = fine_tuning_recipe(args)
    out = Path(args.out or f"runs/cv-{Path(str(recipe.task.data)).stem}")
    try:
        r = cross_validate_run(recipe, out, folds=args.folds, log=logger(args))
    except Diverged as e:
        raise e.advise(FINETUNE_ADVICE) from None
    lines = [f"{args.folds}-fold cross-validation of {recipe.task.base} on {recipe.task.data}:"]
    for key in r["mean"]:
        lines.append(f"  {key:11s} {r['mean'][key]:.4f} +- {r['std'][key]:.4f}   "
                     f"(folds: {', '.join(f'{v:.4f}' for v in r['values'][key])})")
    emit(args, r, "\n".join(lines))


def cmd_predict(args) -> None:
    from lmforge.train.predict import predict_file

    out, report = predict_file(args.run, args.file, args.out, args.text_column, args.truncation, log=logger(args),
                               psi_threshold=getattr(args, "psi_threshold", THRESHOLD))
    r = {"predictions": str(out), "report": report}
    text = f"predictions written to {out}"
    if report and "exact_match" in report:
        text = f"exact match {report['exact_match']:.1f}, F1 {report['f1']:.1f} on {report['n']} questions\n" + text
    elif report and "chrf" in report:
        text = f"{_scores(report)} on {report['n']} rows\n" + text
    elif report and "labels" in report:
        from lmforge.evaluate.classification import format_report

        text = format_report(report) + _entities(report, "\n") + "\n\n" + text
    if report and "drift" in report:
        d = report["drift"]
        text = (f"drift: PSI {d['psi']:.4f} of the {d['rows']} predicted labels against those on the run's "
                f"{d['reference']} ({'above' if d['shifted'] else 'within'} the warning threshold {d['threshold']})\n"
                + text)
    emit(args, r, text)


def cmd_translate(args) -> None:
    if args.file:
        return cmd_predict(args)
    if args.text is None:
        from lmforge.errors import LmforgeError

        raise LmforgeError("give the text to translate, or --file with one source a line")
    from lmforge.train.predict import translate_texts

    out = translate_texts(args.run, [args.text], args.num_beams, log=logger(args))[0]
    emit(args, {"source": args.text, "output": out}, out)


def cmd_attention(args) -> None:
    import lmforge
    from lmforge.interpret.attention import plot_attention, select

    lm = lmforge.load(args.run, device="cpu")
    if args.cross or args.target is not None:
        if args.target is None or not args.cross:
            from lmforge.errors import LmforgeError

            raise LmforgeError("cross-attention needs both --cross and --target TEXT (the translation to align)")
        weights, cols, rows = lm.cross_attention(args.text, args.target, return_tokens=True)
        what = "cross-attention"
    else:
        weights, cols = lm.attention(args.text, return_tokens=True)
        rows, what = cols, "attention"
    w = select([x[None] for x in weights], args.layer, args.head)  # (T, S)
    out = Path(args.out)
    plot_attention(w, rows, cols, out, title=f"{Path(args.run).name}: {what}, layer {args.layer}, head {args.head}")
    r = {"out": str(out), "tokens": cols, "layer": args.layer, "head": args.head, "layers": len(weights),
         "heads": int(weights[0].size(0)), "weights": [[round(float(v), 6) for v in row] for row in w]}
    if rows is not cols:
        r["target_tokens"] = rows
    emit(args, r, f"{what} of layer {args.layer}, head {args.head} over {len(cols)} tokens drawn to {out}")


def lora_flags(sp) -> None:
    """LoRA instead of every weight (models/lora.py): task.lora_*."""
    sp.add_argument("--lora-rank", type=int, help="train LoRA adapters of this rank (e.g. 8) on the frozen base "
                    "instead of every weight; the run saves the adapter alone (default: 0, off)")
    sp.add_argument("--lora-alpha", type=float, help="LoRA's scale is alpha / rank (default: 16)")
    sp.add_argument("--lora-dropout", type=float, help="dropout on the adapters' input (default: 0.05)")
    sp.add_argument("--lora-targets", help="the layers that get adapters, comma-separated: qkv, proj, fc (the "
                    "feed-forward's input), q, kv (cross-attention) (default: qkv,proj,fc)")
    sp.add_argument("--augment", nargs="?", const="synonym,insert,swap,delete", metavar="OPS",
                    help="classify: add EDA variants of the training rows (never of validation or test rows): "
                    "synonym,insert,swap,delete (the default when given alone), backtranslate")
    sp.add_argument("--augment-n", type=int, help="--augment: variants per training row (default: 4)")
    sp.add_argument("--augment-alpha", type=float, help="--augment: share of a row's words changed (default: 0.1)")
    sp.add_argument("--augment-via", help="--augment backtranslate: THERE,BACK, two lmforge translation runs")


def task_flags(sp) -> None:
    """The flags of `finetune` and `cv`: each sets one key of the fine-tuning recipe."""
    sp.add_argument("base", nargs="?", help="an lmforge run (GPT, BERT, ELECTRA, encoder-decoder), a Hugging Face "
                    "BERT/GPT-2/Llama/T5/BART/Marian directory, or (translate, summarize) an encoder-decoder preset "
                    "such as t5-mini, trained from scratch (task.base)")
    sp.add_argument("--task", choices=["classify", "token", "qa", "translate", "summarize", "chat"],
                    help="classify: a label per row; token: a tag per word (.jsonl lists); qa: an answer span; "
                    "translate / summarize: an encoder-decoder writes the target; chat: a GPT learns the assistant's "
                    "turns of conversations")
    sp.add_argument("--data", help="labelled rows: a .csv, .tsv or .jsonl file; translate: also bible (with --pair); "
                    "summarize: also bbc-news; chat: conversations as .jsonl ({\"messages\": [...]} or prompt / "
                    "completion), or chitchat (task.data)")
    sp.add_argument("--pair", help="translate on bible: source-target languages, e.g. en-es, zh-en")
    sp.add_argument("--source-column", help="translate / summarize: column with the source text")
    sp.add_argument("--target-column", help="translate / summarize: column with the reference output")
    sp.add_argument("--max-target-length", type=int, help="translate / summarize: target tokens (default: 128 / 32)")
    sp.add_argument("--label-smoothing", type=float, help="translate / summarize: eps of the smoothed target "
                    "(default: 0.1)")
    sp.add_argument("--num-beams", type=int, help="translate / summarize: beam width when validating and testing "
                    "(default: 4)")
    sp.add_argument("--text-column", help="column with the text (default: text)")
    sp.add_argument("--text-pair-column", help="a second text per row, e.g. a hypothesis or an answer")
    sp.add_argument("--label-column", help="column with the class (default: label)")
    sp.add_argument("--question-column", help="qa: column with the question (default: question)")
    sp.add_argument("--context-column", help="qa: column with the passage (default: context)")
    sp.add_argument("--answer-column", help="qa: column with the answer copied from the passage (default: answer)")
    sp.add_argument("--doc-stride", type=int, help="qa: a passage longer than fits is read in overlapping windows; "
                    "tokens two neighbouring windows share (default: a quarter of a window)")
    sp.add_argument("--tokens-column", help="token: the list of words per .jsonl line (default: tokens)")
    sp.add_argument("--tags-column", help="token: the list of tags, one per word (default: tags)")
    sp.add_argument("--max-length", type=int, help="tokens per row (default: the model's context)")
    sp.add_argument("--truncation", choices=["warn", "error"], help="rows longer than that: cut with a warning "
                    "(default) or refuse")
    sp.add_argument("--class-weights", action="store_true", default=None, help="weigh classes by inverse frequency")
    sp.add_argument("--epochs", type=float, help="passes over the training rows (default: 3)")
    sp.add_argument("--batch-size", type=int, help="rows per step (default: 16)")
    sp.add_argument("--lr", type=float, help="peak learning rate (default: 5e-5)")
    sp.add_argument("--optimizer", choices=["adamw", "adafactor"], help="adamw (default) or adafactor (T5's; its "
                    "--lr is a step relative to each weight's size: 1e-2 from scratch, 1e-3 from a pretrained model)")
    lora_flags(sp)
    sp.add_argument("--patience", type=int, help="evaluations without improvement before stopping (default: 2)")
    sp.add_argument("--evals-per-epoch", type=int, help="validation passes per epoch (default: 1)")
    sp.add_argument("--metric", choices=["accuracy", "f1_macro", "entity_f1", "bleu", "chrf", "rougeL"],
                    help="what picks the kept checkpoint (entity_f1: --task token with BIO tags; translate: bleu or "
                    "chrf; summarize: rougeL)")
    sp.add_argument("--val-fraction", type=float, help="share of rows for validation (default: 0.1)")
    sp.add_argument("--test-fraction", type=float, help="share of rows for the final test (default: 0.1)")
    sp.add_argument("--seed", type=int, help="the split and the shuffling (default: 1337)")
    sp.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    sp.add_argument("--compile", help="auto (default: on CUDA only), true or false: run the training steps "
                    "through torch.compile")
    sp.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard event files "
                    "into the run directory (train.tensorboard; pip install 'lmforge[monitor]')")
    sp.add_argument("--out", help="run directory")
    sp.add_argument("--recipe", help="a fine-tuning recipe (YAML file or shipped name, e.g. finetune-ner) under the "
                    "flags; every flag above is a shorthand for one of its keys (--lr: train.lr, --epochs: task.epochs)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any recipe key, e.g. "
                    "train.weight_decay=0.1 (repeatable)")


def add_commands(sub, command, json_flag) -> None:
    f = command("finetune", cmd_finetune, "fine-tune a pretrained model on labelled rows; keep the best; report on a "
                "held-out test split")
    task_flags(f)
    json_flag(f)
    f.add_argument("--resume", action="store_true", help="continue a stopped run in --out from its last kept "
                   "checkpoint (the same settings)")
    cv = command("cv", cmd_cv, "k-fold cross-validation of fine-tuning (stratified for classify): mean and standard deviation")
    task_flags(cv)
    json_flag(cv)
    cv.add_argument("--folds", type=int, default=5, help="number of folds (default: 5)")
    p = command("predict", cmd_predict, "apply a fine-tuned run to every row of a file: labels, word tags or answers")
    p.add_argument("run", help="a run made by `lmforge finetune`, or a Hugging Face directory of a fine-tuned "
                   "classifier, tagger or QA model (BERT)")
    p.add_argument("--file", required=True, help="rows: .csv, .tsv, .jsonl (or .txt: one document); token: .jsonl "
                   "word lists; qa: question and context columns")
    p.add_argument("--text-column", help="column with the text (default: the one the model was fine-tuned on)")
    p.add_argument("--out", help="where to write JSON lines (default: beside FILE, named after it without its "
                   "suffix: data.csv -> data.predictions.jsonl)")
    p.add_argument("--truncation", choices=["warn", "error"], default="warn")
    p.add_argument("--psi-threshold", type=float, default=THRESHOLD, help="a classifier: the population stability "
                   f"index of its predicted labels above which the report says they shifted (default: {THRESHOLD})")
    json_flag(p)
    t = command("translate", cmd_translate, "translate (or summarise) text with an encoder-decoder run")
    t.add_argument("run", help="a run made by `lmforge finetune --task translate | summarize`, or a Hugging Face "
                   "T5 / BART / Marian directory")
    t.add_argument("text", nargs="?", help="the text to translate")
    t.add_argument("--file", help="translate every source of a file instead (.txt: one a line; .csv, .tsv, .jsonl: "
                   "the run's source column) and write JSON lines")
    t.add_argument("--num-beams", type=int, help="beam width (default: the run's task.num_beams)")
    t.add_argument("--text-column", help="--file: the column with the sources (default: the run's source column)")
    t.add_argument("--out", help="--file: where to write JSON lines (default: FILE.predictions.jsonl)")
    t.add_argument("--truncation", choices=["warn", "error"], default="warn")
    json_flag(t)
    a = command("attention", cmd_attention, "draw the attention weights of one layer and head as a heatmap")
    a.add_argument("run", help="an lmforge run or a Hugging Face directory")
    a.add_argument("text", help="the text to look at (an encoder-decoder model: the source)")
    a.add_argument("--target", help="an encoder-decoder model: the target text, read as the translation of TEXT")
    a.add_argument("--cross", action="store_true", help="draw the cross-attention (target rows over source columns: "
                   "the alignment) instead of the self-attention; needs --target")
    a.add_argument("--layer", type=int, default=0, help="0-based layer (default: 0)")
    a.add_argument("--head", type=int, default=0, help="0-based head (default: 0)")
    a.add_argument("--out", default="attention.png", help="PNG to write (default: attention.png)")
    json_flag(a)
