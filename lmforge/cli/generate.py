"""`lmforge generate`, `chat`, `export` and `merge`: using a trained model (an lmforge run or a Hugging Face
directory). A bad decoding flag is refused before anything is printed, naming the flag."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys

from lmforge.cli.output import emit
from lmforge.errors import LmforgeError


def cmd_export(args) -> None:
    import lmforge
    from lmforge.api import export_hf

    lm = lmforge.load(args.run, device="cpu")
    out = export_hf(lm, args.out)
    files = sorted(f.name for f in out.iterdir())
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    r = {"run": args.run, "to": args.to, "out": str(out), "architecture": arch,
         "parameters": lm.model.num_params(), "files": files}
    auto = "AutoModelForSeq2SeqLM" if lm.config.family == "seq2seq" else \
        "AutoModelForCausalLM" if lm.config.causal else "AutoModel"
    emit(args, r, f"exported {r['parameters']:,} parameters as a Hugging Face {r['architecture']} to {out} "
                   f"({', '.join(files)}); load it with transformers.{auto}.from_pretrained({str(out)!r})")


def _escaped(text: str) -> str:
    """A flag's text with \\n, \\t, \\r and \\\\ read as the characters they name (shells pass them as typed)."""
    return re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


def _sampling(args) -> dict:
    """The decoding flags shared by `generate` and `chat`, as LM.generate / LM.stream keywords."""
    return dict(temperature=0.8 if args.temperature is None else args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, min_p=args.min_p,
                repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)


def _checked_settings(lm, args, **options) -> None:
    """Refuse a bad decoding flag before anything is printed (the error's field names its flag)."""
    from lmforge.api import stop_list

    stop_list(getattr(args, "stop", None) or None)
    lm.generate_config(args.max_new_tokens, **_sampling(args), **options)


def _note_unused_flags(args) -> None:
    """Say so (on stderr) when a flag given has no effect: sampling flags with beam search, beam
    flags without it."""
    if args.num_beams > 1:
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


def _stream(lm, args, options: dict) -> None:
    """Print the continuation as it is produced; with --num-samples the samples are decoded together,
    as without --stream: the first is shown live, the others once all are done."""
    if args.num_beams > 1:
        raise LmforgeError("beam search keeps several candidates until the end, so it cannot stream; drop --stream or --beams")
    lm.encode_prompt(args.prompt)  # refuse a bad prompt before any of it is printed
    others = [""] * (args.num_samples - 1)
    print(args.prompt, end="", flush=True)
    for pieces in lm.stream(args.prompt, args.max_new_tokens, num_samples=args.num_samples, **options):
        first, *rest = [pieces] if args.num_samples == 1 else pieces
        print(first, end="", flush=True)
        others = [o + p for o, p in zip(others, rest)]
    print("".join("\n\n" + args.prompt + o for o in others))


def cmd_generate(args) -> None:
    import lmforge

    lm = lmforge.load(args.run)
    _note_unused_flags(args)
    options = dict(_sampling(args), stop=args.stop or None)
    beam_options = {k: v for k, v in (("length_penalty", args.length_penalty), ("early_stopping", args.early_stopping))
                    if v is not None}
    _checked_settings(lm, args, num_samples=args.num_samples, num_beams=args.num_beams, **beam_options)
    if args.stream and not args.json:
        return _stream(lm, args, options)
    outs = lm.generate(args.prompt, args.max_new_tokens, num_samples=args.num_samples, num_beams=args.num_beams,
                       **beam_options, **options)
    outs = outs if isinstance(outs, list) else [outs]
    if args.json:
        print(json.dumps({"prompt": args.prompt, "samples": outs, "backend": lm.backend,
                          "backend_reason": lm.backend_reason}, ensure_ascii=False))
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
    while _turn(chat):
        pass


def _turn(chat) -> bool:
    """One exchange of the chat: read a line, print the reply; False when the user ends the chat."""
    try:
        message = input("you> ").strip()
    except EOFError:
        print(file=sys.stderr)
        return False
    if message in ("/exit", "/quit"):
        return False
    if message == "/reset":
        chat.reset()
        return True
    if not message:
        return True
    print("model> ", end="", flush=True)
    reply = chat.send(message)
    try:
        for piece in reply:
            print(piece, end="", flush=True)
    except LmforgeError as e:  # one bad message must not end the conversation
        print(flush=True)
        print(f"lmforge: error: {e}", file=sys.stderr, flush=True)
        return True
    except KeyboardInterrupt:  # Ctrl-C stops this reply, not the conversation
        reply.close()  # keeps the reply as far as it went
        print(flush=True)
        print("lmforge: reply stopped; /exit or Ctrl-D ends the chat", file=sys.stderr, flush=True)
        return True
    print()
    return True

def decoding_flags(sp) -> None:
    """The sampling flags `generate` and `chat` share."""
    sp.add_argument("--max-new-tokens", type=int, default=200)
    sp.add_argument("--temperature", type=float, help="0 is greedy decoding (default: 0.8)")
    sp.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    sp.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with probability >= p")
    sp.add_argument("--min-p", type=float, help="drop tokens less likely than min-p x the most likely one")
    sp.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeating tokens")
    sp.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size")
    sp.add_argument("--seed", type=int, help="repeatable sampling")


def cmd_merge(args) -> None:
    from lmforge.checkpoint import merge_run

    r = merge_run(args.run, args.out)
    emit(args, r, f"merged the LoRA adapters of {r['merged_layers']} layers into the weights: {r['parameters']:,} "
                  f"parameters in {r['out']}, an ordinary run")


def add_commands(sub, command, json_flag) -> None:
    x = command("export", cmd_export, "write a GPT-2-, Llama-, BERT-, T5-, BART- or Marian-shaped model and its tokenizer as a Hugging Face directory")
    x.add_argument("run", help="run directory (or a Hugging Face directory)")
    x.add_argument("--to", choices=["hf"], default="hf", help="format (default: hf, for transformers' from_pretrained)")
    x.add_argument("out", help="output directory; must not exist or be empty")
    json_flag(x)

    m = command("merge", cmd_merge, "fold a LoRA run's adapters into its base model's weights: an ordinary run that "
                                     "needs neither the base nor the adapter")
    m.add_argument("run", help="a run fine-tuned with --lora-rank")
    m.add_argument("--out", required=True, help="output directory; must not exist or be empty")
    json_flag(m)

    g = command("generate", cmd_generate, "continue a prompt with a trained model (an lmforge run or a Hugging Face directory)")
    g.add_argument("run", help="run directory, or a Hugging Face GPT-2 / Llama directory")
    g.add_argument("prompt", nargs="?", default="", help="text to continue (default: start a new document); text "
                   "that starts with - goes last, after --: lmforge generate [options] RUN -- -text")
    decoding_flags(g)
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", type=_escaped,
                   help="end a continuation at this text (repeatable; \\n, \\t and \\\\ are a newline, a tab and a backslash)")
    g.add_argument("--num-samples", type=int, default=1, help="continuations of the prompt (sharing one prefill)")
    g.add_argument("--beams", dest="num_beams", type=int, default=1, help="> 1: beam search with this many beams")
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

