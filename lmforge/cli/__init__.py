"""The `lmforge` command: one sub-command per job, thin over the library.

    run.py       quickstart, train, eval, plot   data.py      data list|prepare|anonymize|augment|dedupe,
                                                              tokenizer train
    generate.py  generate, chat, export, merge   tasks.py     finetune, cv, predict, attention
    serve.py     serve                           output.py    text or --json on stdout, logs
    compress.py  quantize, prune, distill, compress-report
    embed.py     embed train|similar|analogy|plot

Every error a user can cause is an `LmforgeError`: printed as one line on stderr, exit status 2.
An error about one setting names it as this command line set it: the flag when a flag gave it
(`--lr`, through the table config.SHORTHANDS from recipe keys to flags), else its recipe key.
Commands that report figures take `--json` and then print exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from lmforge import __version__
from lmforge.cli import compress, data, embed, generate, run, serve, tasks
from lmforge.cli.generate import _escaped  # noqa: F401  (tests and callers name these from lmforge.cli)
from lmforge.cli.output import emit as _emit, finite as _finite, logger as _log  # noqa: F401
from lmforge.cli.run import quickstart_dir  # noqa: F401
from lmforge.errors import LmforgeError
from lmforge.io import os_error

TRAINING = ("quickstart", "train", "finetune", "cv")  # commands whose interruption leaves a checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmforge", description="Train, evaluate and sample Transformer language models "
                                "on your own text.")
    p.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, fn, help_, parent=sub):
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn, parser=sp)
        return sp

    def json_flag(sp):
        sp.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    for group in (run, data, generate, tasks, serve, compress, embed):
        group.add_commands(sub, command, json_flag)
    return p


def flag_for(args, field: str) -> str | None:
    """How this command line names `field` (a recipe key or an argument): its flag, or None where the
    recipe file or a --set gave it (then its recipe key names it)."""
    from lmforge.config import SHORTHANDS

    dest = {key: name for name, key in SHORTHANDS.items()}.get(field, field)
    action = next((a for a in args.parser._actions if a.dest == dest), None)
    if action is None or (getattr(args, dest, None) is None and field in _recipe_keys(args)):
        return None
    return max(action.option_strings, key=len) if action.option_strings else dest.upper()


def _recipe_keys(args) -> set[str]:
    """The recipe keys this command line's --recipe file and --set items give."""
    from lmforge.config import parse_set, read_recipe

    keys: set[str] = set()
    with contextlib.suppress(LmforgeError):
        keys |= {f"{s}.{k}" for s, values in parse_set(getattr(args, "set", None) or []).items() for k in values}
    if getattr(args, "recipe", None):
        with contextlib.suppress(LmforgeError):
            raw = read_recipe(args.recipe)[0]
            keys |= {f"{s}.{k}" for s, values in raw.items() if isinstance(values, dict) for k in values}
    return keys


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except LmforgeError as e:
        flag = flag_for(args, e.field) if e.field else None
        print(f"lmforge: error: {e.named(flag) if flag else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        trains = args.command in TRAINING
        print("lmforge: interrupted" + ("; the last checkpoint (if any) is intact" if trains else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`lmforge generate ... | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1
    except OSError as e:  # a full disk or a vanished file anywhere not caught nearer: one line too
        doing, where = ("use", e.filename) if e.filename else ("finish", "the command")
        print(f"lmforge: error: {os_error(e, where, doing)}", file=sys.stderr)
        return 2
    return 0

