"""A text file rewritten row by row in its own format: what `lmforge data anonymize` and `lmforge
data augment` share.

    .jsonl       each line an object; its `column` field is the text, the other fields are kept
    .csv / .tsv  a header line names the columns; `column` is the text, the other cells are kept
    .txt         the whole file one text, or (lines=True) each non-empty line one

`rewrite` calls `change(text, n, row)` for each row (n: its number from 0; row: its fields as a dict,
None for .txt) and writes one row per text that it returns, the other fields copied: one text for
anonymisation, the original and its variants for augmentation. The output is written whole or not
at all (lmforge.io.atomic_path), so a bad row never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

from lmforge.errors import LmforgeError
from lmforge.io import atomic_path

Change = Callable[[str, int, "dict | None"], "list[str]"]


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text; a missing file or another encoding is one sentence naming the fix."""
    if not path.is_file():
        raise LmforgeError(f"{path} is not a file; give a .txt, .jsonl, .csv or .tsv file to {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LmforgeError(f"{path} is not UTF-8 text; convert it (e.g. iconv -t UTF-8) and try again") from None


def read_rows(path: str | Path, column: str, what: str, lines: bool = False) -> list[dict]:
    """The rows of a .jsonl / .csv / .tsv file as dicts (the text under `column`), or of a .txt file
    as {column: text} (one row, or one per non-empty line with lines=True)."""
    path = Path(path)
    text = read_text(path, what)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [row for _, row in _json_rows(text, column, path)]
    if suffix in (".csv", ".tsv"):
        header, rows = _table_rows(text, column, path, "\t" if suffix == ".tsv" else ",")
        return [dict(zip(header, row)) for row in rows]
    texts = [t for t in text.splitlines() if t.strip()] if lines else [text]
    return [{column: t} for t in texts]


def rewrite(path: str | Path, out: str | Path, column: str, change: Change, what: str, lines: bool = False) -> None:
    """`path` rewritten into `out` in the same format, each row's `column` replaced by the texts
    `change` returns for it (one row each, the other fields copied)."""
    path, out = Path(path), Path(out)
    text = read_text(path, what)
    if out.resolve() == path.resolve():
        raise LmforgeError(f"--out {out} is the input itself; write the new file elsewhere")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        body = "".join(json.dumps({**row, column: t}, ensure_ascii=False) + "\n"
                       for n, row in _json_rows(text, column, path) for t in change(row[column], n, row))
    elif suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        header, rows = _table_rows(text, column, path, sep)
        k = header.index(column)
        new = [header]
        for n, row in enumerate(rows):
            new += [row[:k] + [t] + row[k + 1:] for t in change(row[k], n, dict(zip(header, row)))]
        buf = io.StringIO()
        csv.writer(buf, delimiter=sep, lineterminator="\n").writerows(new)
        body = buf.getvalue()
    elif lines:
        body = "".join(t + "\n" for n, line in enumerate(t for t in text.splitlines() if t.strip())
                       for t in change(line, n, None))
    else:
        body = "".join(change(text, 0, None))
    with atomic_path(out) as tmp:
        tmp.write_text(body, encoding="utf-8")


def _json_rows(text: str, column: str, path: Path):
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise LmforgeError(f"{path} line {n + 1} is not JSON; each line of a .jsonl file is one object") from None
        if not isinstance(row, dict) or not isinstance(row.get(column), str):
            raise LmforgeError(f"{path} line {n + 1} has no text field {column!r}; name it with --column")
        yield n, row


def _table_rows(text: str, column: str, path: Path, sep: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text), delimiter=sep))
    if not rows or column not in rows[0]:
        raise LmforgeError(f"{path} has no column {column!r} in its header; name the text column with --column")
    width = len(rows[0])
    return rows[0], [r + [""] * (width - len(r)) for r in rows[1:] if r]  # short rows: missing cells empty
