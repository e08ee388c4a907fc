"""The `lmforge` command: one sub-command per job, thin over the library.

Every error a user can cause is an `LmforgeError`: printed as one line on stderr, exit status 2.
Commands that report figures take `--json` and then print exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path

from lmforge import __version__
from lmforge.errors import LmforgeError


def _emit(args, obj: dict, text: str) -> None:
    print(json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False) if args.json else text)


def _finite(obj):
    """`obj` with NaN and infinities as null: strict JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _log(args):
    return (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print


# --- quickstart ------------------------------------------------------------------------------------
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
    r = run_quickstart(args.corpus, out, args.set, log=_log(args), progress=not args.json)
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
    _emit(args, r, "\n".join(lines))


# --- data --------------------------------------------------------------------------------------------
def cmd_data_list(args) -> None:
    from lmforge.data.corpora import list_corpora

    rows = list_corpora()
    text = [f"{'name':16} {'lang':5} {'size':36} {'cached':7} licence"]
    text += [f"{r['name']:16} {r['language']:5} {r['size']:36} {'yes' if r['cached'] else 'no':7} {r['licence']}"
             for r in rows]
    _emit(args, {"corpora": rows}, "\n".join(text))


def _data_config(args):
    from lmforge.config import DataConfig

    return DataConfig(corpus=args.corpus, column=args.column, tokenizer=args.tokenizer,
                      vocab_size=args.vocab_size, val_fraction=args.val_fraction)


def cmd_data_prepare(args) -> None:
    from lmforge.data.shards import prepare

    data = prepare(_data_config(args), log=_log(args))
    m = dict(data.meta)
    _emit(args, m, "\n".join(f"{k}: {v}" for k, v in m.items()))


def cmd_tokenizer_train(args) -> None:
    from lmforge.data.clean import clean_documents
    from lmforge.data.corpora import load_corpus
    from lmforge.tokenizer import train_tokenizer

    docs, _ = clean_documents(load_corpus(args.corpus, column=args.column).documents)
    tok = train_tokenizer(args.kind, docs, args.vocab_size)
    out = Path(args.out)
    try:
        if out.is_dir() or not out.suffix:
            out.mkdir(parents=True, exist_ok=True)
            out = out / "tokenizer.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tok.save(out)
    except OSError as e:
        raise LmforgeError(f"cannot write {out}: {e.strerror or e}; choose a --out you can write to") from None
    sample = docs[0][:200]
    ids = tok.encode(sample)
    r = {"path": str(out), "kind": tok.kind, "vocab_size": tok.vocab_size,
         "chars_per_token": round(len(sample) / max(1, len(ids)), 3)}
    _emit(args, r, f"saved a {tok.kind} tokenizer of {tok.vocab_size:,} tokens to {out} "
                   f"({r['chars_per_token']} characters per token on a sample)")


# --- train / eval / generate ---------------------------------------------------------------------------
def cmd_train(args) -> None:
    from lmforge.config import load_recipe
    from lmforge.train.checkpoint import is_checkpoint
    from lmforge.train.trainer import Trainer

    out = Path(args.out or f"runs/{Path(args.recipe).stem}")
    if args.resume:
        if not is_checkpoint(out):
            raise LmforgeError(f"{out} holds no checkpoint to resume; run without --resume, or give the run with --out")
        fixed = [s for s in args.set if not s.strip().startswith("train.")]
        if fixed:  # the weights and token shards are the model's and the data's as they were
            raise LmforgeError(f"--set {fixed[0]} would change the model or its data, which a resumed run keeps; "
                               "change only train.* settings with --resume, or start a new run with another --out")
        recipe = load_recipe(str(out / "recipe.yaml"), args.set)  # the run's own recipe (+ --set)
        if not any(s.strip().startswith("train.progress") for s in args.set):
            recipe.train.progress = True  # an earlier --json run saved it off
    else:
        if is_checkpoint(out):
            raise LmforgeError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
        recipe = load_recipe(args.recipe, args.set)
    if args.json:
        recipe.train.progress = False
    trainer = Trainer(recipe, out, resume=args.resume, log=_log(args))
    m = trainer.model
    _log(args)(f"training {m.num_params() / 1e6:.2f}M parameters ({m.flops_per_token() / 1e6:.1f} MFLOP per token) "
               f"on {trainer.device}{' (compiled at the first step)' if trainer.compile_pending else ''}, "
               f"{recipe.train.max_steps} steps -> {out}")
    res = trainer.fit()
    last = res.evals[-1] if res.evals else trainer.evaluate(full=True)
    r = {"run_dir": str(out), "steps": res.steps, **{f"val_{k}": v for k, v in last.items() if k != "step"},
         "tokens_per_s": round(res.tokens_per_s, 1), "seconds": round(res.seconds, 1), "parameters": res.n_params,
         "flops_per_token": res.flops_per_token, "stopped_early": res.stopped_early, "compiled": res.compiled}
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in last.items()
                      if k in ("perplexity", "bits_per_byte", "mlm_accuracy", "nsp_accuracy", "rtd_accuracy"))
    _emit(args, r, f"step {res.steps}: validation loss {r['val_loss']:.4f}, {shown}; {r['tokens_per_s']:,.0f} "
                   f"tokens/s over {r['seconds']:.0f} s; saved in {out}")


def cmd_eval(args) -> None:
    import lmforge
    from lmforge.evaluate.perplexity import evaluate_lm

    if args.batch_size < 1:
        raise LmforgeError(f"--batch-size must be 1 or more, not {args.batch_size}")
    lm = lmforge.load(args.run)
    ctx = lm.config.context_length
    if lm.config.head != "none":
        raise LmforgeError(f"{args.run} is fine-tuned for {lm.config.head!r}: eval scores language models and "
                           "pretrained encoders; score it on labelled rows with `lmforge predict RUN --file FILE` "
                           "(its test figures are in report.json)")
    if not lm.config.causal:
        return _eval_encoder(args, lm)
    if args.file:
        from lmforge.config import load_recipe
        from lmforge.data.clean import clean_documents
        from lmforge.data.corpora import load_corpus
        from lmforge.data.shards import encode_documents

        docs = load_corpus(args.file, column=args.column).documents
        recipe = Path(args.run) / "recipe.yaml"  # text is cleaned as the run's training text was
        if recipe.is_file() and load_recipe(str(recipe)).data.clean:
            docs = clean_documents(docs, dedupe=False)[0]
        tokens = encode_documents(lm.tokenizer, docs)
        n_bytes = sum(len(d.encode("utf-8", "surrogatepass")) for d in docs)
        source = args.file
    else:
        from lmforge.config import load_recipe
        from lmforge.data.shards import prepare

        if not (Path(args.run) / "recipe.yaml").is_file():
            raise LmforgeError(f"{args.run} has no recipe.yaml, so it has no validation split of its own (a Hugging "
                               "Face directory, or a run saved without one); give the text to score with --file")
        recipe = load_recipe(str(Path(args.run) / "recipe.yaml"))
        data = prepare(recipe.data, tokenizer=lm.tokenizer, log=_log(args))
        tokens, n_bytes, source = data.val, data.meta["val_bytes"], f"validation split of {recipe.data.corpus}"
    r = evaluate_lm(lm.model, tokens, ctx, batch_size=args.batch_size, bytes_per_token=n_bytes / max(1, len(tokens)))
    r["source"] = source
    _emit(args, r, f"{source}: {r['tokens']:,} tokens, loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f}, "
                   f"bits per byte {r['bits_per_byte']:.4f}")


def _eval_encoder(args, lm) -> None:
    """An encoder's own objective (MLM / NSP / RTD accuracy) on every batch of its validation split."""
    from lmforge.config import load_recipe
    from lmforge.train.tasks import build_task, objective_for, prepare_data

    if args.file or not (Path(args.run) / "recipe.yaml").is_file():
        raise LmforgeError("eval scores an encoder on the validation split of the run that trained it; give an lmforge "
                           "run directory without --file, or fine-tune it and read report.json")
    recipe = load_recipe(str(Path(args.run) / "recipe.yaml"))
    objective = objective_for(recipe, lm.config.family)
    data = prepare_data(recipe, objective, lm.tokenizer, _log(args))
    r = build_task(recipe, objective, data, lm.config).evaluate(lm.model, full=True)
    r["source"] = f"validation split of {recipe.data.corpus}"
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in r.items() if k.endswith("accuracy"))
    _emit(args, r, f"{r['source']}: {r['batches']} batches, loss {r['loss']:.4f}, {shown}")


def cmd_export(args) -> None:
    import lmforge
    from lmforge.api import export_hf

    lm = lmforge.load(args.run, device="cpu")
    out = export_hf(lm, args.out)
    files = sorted(f.name for f in out.iterdir())
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    r = {"run": args.run, "to": args.to, "out": str(out), "architecture": arch,
         "parameters": lm.model.num_params(), "files": files}
    auto = "AutoModelForCausalLM" if lm.config.causal else "AutoModel"
    _emit(args, r, f"exported {r['parameters']:,} parameters as a Hugging Face {r['architecture']} to {out} "
                   f"({', '.join(files)}); load it with transformers.{auto}.from_pretrained({str(out)!r})")


def _escaped(text: str) -> str:
    """A flag's text with \\n, \\t, \\r and \\\\ read as the characters they name (shells pass them as typed)."""
    return re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


def _sampling(args) -> dict:
    """The decoding flags shared by `generate` and `chat`, as LM.generate / LM.stream keywords."""
    return dict(temperature=0.8 if args.temperature is None else args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, min_p=args.min_p,
                repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)


# GenerateConfig's fields as the flags that set them, so that an error names what the user typed
FLAGS = {"max_new_tokens": "--max-new-tokens", "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p",
         "min_p": "--min-p", "repetition_penalty": "--repetition-penalty",
         "no_repeat_ngram_size": "--no-repeat-ngram-size", "num_samples": "--num-samples", "num_beams": "--beams",
         "length_penalty": "--length-penalty", "early_stopping": "--early-stopping", "seed": "--seed"}


def _checked_settings(lm, args, **options) -> None:
    """Refuse a bad decoding flag before anything is printed, naming the flag (GenerateConfig's own
    message names its Python field)."""
    from lmforge.api import stop_list

    stop_list(getattr(args, "stop", None) or None)
    try:
        lm.generate_config(args.max_new_tokens, **_sampling(args), **options)
    except LmforgeError as e:
        raise LmforgeError(re.sub(r"\b(" + "|".join(FLAGS) + r")\b", lambda m: FLAGS[m.group(1)], str(e))) from None


def _note_unused_flags(args) -> None:
    """Say so (on stderr) when a flag given has no effect: sampling flags with beam search, beam
    flags without it."""
    if args.beams > 1:
        given = [f for f, v in (("--temperature", args.temperature), ("--top-k", args.top_k), ("--top-p", args.top_p),
                                ("--min-p", args.min_p)) if v is not None]
        why = "with --beams (beam search keeps the most likely hypotheses; it does not sample)"
    else:
        given = [f for f, v in (("--length-penalty", args.length_penalty), ("--early-stopping", args.early_stopping))
                 if v is not None]
        why = "without --beams 2 or more"
    if given:
        print(f"lmforge: note: {' and '.join(given)} {'has' if len(given) == 1 else 'have'} no effect {why}",
              file=sys.stderr)
    if args.stream and args.json:
        print("lmforge: note: --stream has no effect with --json (one JSON object is printed at the end)",
              file=sys.stderr)


def cmd_generate(args) -> None:
    import lmforge

    lm = lmforge.load(args.run)
    _note_unused_flags(args)
    options = dict(_sampling(args), stop=args.stop or None)
    beam_options = {k: v for k, v in (("length_penalty", args.length_penalty), ("early_stopping", args.early_stopping))
                    if v is not None}
    _checked_settings(lm, args, num_samples=args.num_samples, num_beams=args.beams, **beam_options)
    if args.stream and not args.json:
        if args.beams > 1:
            raise LmforgeError("beam search keeps several candidates until the end, so it cannot stream; drop --stream or --beams")
        lm.encode_prompt(args.prompt)  # refuse a bad prompt before any of it is printed
        # the samples are decoded together, as without --stream; the first is shown as it is produced
        # and the others once all are done
        others = [""] * (args.num_samples - 1)
        print(args.prompt, end="", flush=True)
        for pieces in lm.stream(args.prompt, args.max_new_tokens, num_samples=args.num_samples, **options):
            first, *rest = [pieces] if args.num_samples == 1 else pieces
            print(first, end="", flush=True)
            others = [o + p for o, p in zip(others, rest)]
        print("".join("\n\n" + args.prompt + o for o in others))
        return
    outs = lm.generate(args.prompt, args.max_new_tokens, num_samples=args.num_samples, num_beams=args.beams,
                       **beam_options, **options)
    outs = outs if isinstance(outs, list) else [outs]
    if args.json:
        print(json.dumps({"prompt": args.prompt, "samples": outs}, ensure_ascii=False))
    else:
        print("\n\n".join(args.prompt + o for o in outs))


def cmd_chat(args) -> None:
    import lmforge
    from lmforge.chat import Chat

    lm = lmforge.load(args.run)
    _checked_settings(lm, args)
    chat = Chat(lm, system=args.system, max_new_tokens=args.max_new_tokens, sampling=_sampling(args))
    with contextlib.suppress(AttributeError, ValueError):  # a line that is not UTF-8 is refused, not fatal
        sys.stdin.reconfigure(errors="surrogateescape")
    print(f"chatting with {args.run} ({lm.model.num_params() / 1e6:.1f}M parameters); /reset forgets, /exit or Ctrl-D ends",
          file=sys.stderr)
    while True:
        try:
            message = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return
        if message in ("/exit", "/quit"):
            return
        if message == "/reset":
            chat.reset()
            continue
        if not message:
            continue
        print("model> ", end="", flush=True)
        reply = chat.send(message)
        try:
            for piece in reply:
                print(piece, end="", flush=True)
        except LmforgeError as e:  # one bad message must not end the conversation
            print(flush=True)
            print(f"lmforge: error: {e}", file=sys.stderr, flush=True)
            continue
        except KeyboardInterrupt:  # Ctrl-C stops this reply, not the conversation
            reply.close()  # keeps the reply as far as it went
            print(flush=True)
            print("lmforge: reply stopped; /exit or Ctrl-D ends the chat", file=sys.stderr, flush=True)
            continue
        print()


# --- the parser -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmforge", description="Train, evaluate and sample Transformer language models on your own text.")
    p.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, fn, help_, parent=sub):
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    def json_flag(sp):
        sp.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    q = command("quickstart", cmd_quickstart, "train a BPE tokenizer and a small GPT on a built-in corpus, evaluate it, sample from it")
    q.add_argument("--corpus", default="shakespeare", help="built-in corpus or local path (default: shakespeare; try peoples-daily)")
    q.add_argument("--out", help="run directory (default: runs/quickstart)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value, e.g. train.max_steps=500")
    json_flag(q)

    d = sub.add_parser("data", help="list and prepare corpora").add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = command("list", cmd_data_list, "show the built-in corpora: name, language, size, licence, whether cached", d)
    json_flag(dl)
    dp = command("prepare", cmd_data_prepare, "clean, split and tokenise a corpus into cached token shards", d)
    dp.add_argument("corpus", help="built-in corpus name, or a .txt/.jsonl/.csv/.tsv file, folder or glob")
    dp.add_argument("--tokenizer", default="bpe", help="bpe, wordpiece, char, or a path to a tokenizer.json (default: bpe)")
    dp.add_argument("--vocab-size", type=int, default=4096, help="vocabulary of a BPE tokenizer (default: 4096)")
    dp.add_argument("--column", help="text column of a .jsonl/.csv/.tsv corpus (default: text)")
    dp.add_argument("--val-fraction", type=float, default=0.1, help="last fraction of the text kept for validation")
    json_flag(dp)

    t = sub.add_parser("tokenizer", help="train tokenizers").add_subparsers(dest="tok_command", metavar="ACTION", required=True)
    tt = command("train", cmd_tokenizer_train, "train a byte-level BPE or character tokenizer and save tokenizer.json", t)
    tt.add_argument("corpus", help="built-in corpus name, or a file, folder or glob")
    tt.add_argument("--kind", choices=["bpe", "wordpiece", "char"], default="bpe",
                    help="byte-level BPE (GPT), WordPiece (BERT, ELECTRA) or characters (default: bpe)")
    tt.add_argument("--vocab-size", type=int, default=4096)
    tt.add_argument("--column", help="text column of a .jsonl/.csv/.tsv corpus")
    tt.add_argument("--out", default="tokenizer.json", help="file or directory to write (default: tokenizer.json)")
    json_flag(tt)

    tr = command("train", cmd_train, "train a model from a YAML recipe")
    tr.add_argument("--recipe", default="quickstart", help="a YAML file, or a shipped recipe name (quickstart, shakespeare-char)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value, e.g. train.lr=3e-4 (repeatable)")
    tr.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    json_flag(tr)

    e = command("eval", cmd_eval, "perplexity and bits per byte of a GPT; MLM, NSP or RTD accuracy of an encoder run")
    e.add_argument("run", help="run directory")
    e.add_argument("--file", help="text to score (a file, folder or glob); default: the run's validation split")
    e.add_argument("--column", help="text column of a .jsonl/.csv/.tsv file")
    e.add_argument("--batch-size", type=int, default=8)
    json_flag(e)

    x = command("export", cmd_export, "write a GPT-2-, Llama- or BERT-shaped model and its tokenizer as a Hugging Face directory")
    x.add_argument("run", help="run directory (or a Hugging Face directory)")
    x.add_argument("--to", choices=["hf"], default="hf", help="format (default: hf, for transformers' from_pretrained)")
    x.add_argument("out", help="output directory; must not exist or be empty")
    json_flag(x)

    def decoding_flags(sp):
        sp.add_argument("--max-new-tokens", type=int, default=200)
        sp.add_argument("--temperature", type=float, help="0 is greedy decoding (default: 0.8)")
        sp.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
        sp.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with probability >= p")
        sp.add_argument("--min-p", type=float, help="drop tokens less likely than min-p x the most likely one")
        sp.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeating tokens")
        sp.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size")
        sp.add_argument("--seed", type=int, help="repeatable sampling")

    g = command("generate", cmd_generate, "continue a prompt with a trained model (an lmforge run or a Hugging Face directory)")
    g.add_argument("run", help="run directory, or a Hugging Face GPT-2 / Llama directory")
    g.add_argument("prompt", nargs="?", default="", help="text to continue (default: start a new document); text "
                   "that starts with - goes last, after --: lmforge generate [options] RUN -- -text")
    decoding_flags(g)
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", type=_escaped,
                   help="end a continuation at this text (repeatable; \\n, \\t and \\\\ are a newline, a tab and a backslash)")
    g.add_argument("--num-samples", type=int, default=1, help="continuations of the prompt (sharing one prefill)")
    g.add_argument("--beams", type=int, default=1, help="> 1: beam search with this many beams")
    g.add_argument("--length-penalty", type=float, help="beam score = log p / length ** this (default: 1)")
    g.add_argument("--early-stopping", action=argparse.BooleanOptionalAction,
                   help="beams: stop once --beams hypotheses have ended (default), or go on while a live beam could "
                        "still beat them")
    g.add_argument("--stream", action="store_true",
                   help="print the text as it is produced (with --num-samples: the first sample live, the others when done)")
    json_flag(g)

    c = command("chat", cmd_chat, "talk with a chat-shaped model on the terminal (its Hugging Face chat template if it has one, "
                                           "else User:/Assistant: turns)")
    c.add_argument("run", help="run directory, or a Hugging Face GPT-2 / Llama directory")
    c.add_argument("--system", help="text placed before the conversation, e.g. who the assistant is")
    decoding_flags(c)

    from lmforge.cli_tasks import add_commands

    add_commands(sub, command, json_flag)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        trains = args.fn in (cmd_quickstart, cmd_train) or args.command in ("finetune", "cv")
        print("lmforge: interrupted" + ("; the last checkpoint (if any) is intact" if trains else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`lmforge generate ... | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
