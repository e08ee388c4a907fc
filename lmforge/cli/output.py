"""What the commands print: text, or with --json exactly one JSON object on stdout (logs then go to
stderr, so the object is all stdout holds)."""

from __future__ import annotations

import json
import math
import os
import sys


def speaks() -> bool:
    """Under torchrun, process 0 alone prints (RANK 0): the other processes' results are the same."""
    return os.environ.get("RANK", "0") == "0"


def emit(args, obj: dict, text: str) -> None:
    if not speaks():
        return
    print(json.dumps(finite(obj), ensure_ascii=False, allow_nan=False) if args.json else text)


def finite(obj):
    """`obj` with NaN and infinities as null: strict JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def logger(args):
    """Where progress lines go: stdout, or stderr under --json (nowhere from torchrun's other processes)."""
    if not speaks():
        return lambda *a, **k: None
    return (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print


def note(text: str) -> None:
    print(f"lmforge: note: {text}", file=sys.stderr)
