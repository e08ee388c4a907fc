"""Text pairs for encoder-decoder tasks: a source text and the target a model should write for it.

`load_pairs(spec, ...)` reads them from
    "bible"     verse pairs of two languages, `pair="en-es"` (source-target; lmforge.data.bible);
    "bbc-news"  summarisation, `task="summarize"`: each article's body -> its headline (the first line);
    a file      .tsv / .csv / .jsonl rows, `source_column` -> `target_column` (default "source", "target").
Rows with an empty source or target are dropped (the count is in `stats`). `split_pairs` then cuts
train / validation / test, holding out whole groups (the Bible's books) when there are groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lmforge.data import bible
from lmforge.data.corpora import BUILTIN, _read_file, load_corpus
from lmforge.errors import LmforgeError

FILES = (".tsv", ".csv", ".jsonl")
TASKS = {"bible": "translate", "bbc-news": "summarize"}  # what each builtin's pairs are for


@dataclass
class Pairs:
    """Parallel lists: sources[i] -> targets[i]; groups[i] is the unit a split keeps together (a
    verse's book), or None throughout; rows[i] the pair's 0-based row in what it was read from."""

    sources: list[str]
    targets: list[str]
    groups: list[str] | None = None
    source_lang: str | None = None  # ISO 639-1 code, when known
    target_lang: str | None = None
    description: str = ""
    rows: list[int] = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # how the pairs were read (counts, drops)

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = list(range(len(self.sources)))
        for what, seq in (("targets", self.targets), ("groups", self.groups), ("rows", self.rows)):
            if seq is not None and len(seq) != len(self.sources):
                raise ValueError(f"{len(seq)} {what} for {len(self.sources)} sources")

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, index: list[int], part: str) -> "Pairs":
        """The pairs at `index`, in that order, described as `part` of these."""
        pick = lambda seq: [seq[i] for i in index]  # noqa: E731
        return replace(self, sources=pick(self.sources), targets=pick(self.targets),
                       groups=pick(self.groups) if self.groups is not None else None, rows=pick(self.rows),
                       description=f"{self.description} ({part})", stats={})


def parse_pair(pair: str | None) -> tuple[str, str]:
    """'en-es' -> ('en', 'es'): source and target language codes."""
    text = pair.strip().lower() if isinstance(pair, str) else ""
    if not re.fullmatch(r"[a-z]{2}-[a-z]{2}", text):
        raise LmforgeError("{setting} is not a language pair; write source-target as two ISO 639-1 codes, "
                           "e.g. en-es or zh-en", "pair", pair)
    source, target = text.split("-")
    return source, target


def _bible_pairs(pair: str | None, db) -> Pairs:
    if pair is None:
        raise LmforgeError(f"the Bible corpus needs {{field}}, the two languages to pair (source-target), e.g. "
                           f"en-es; it has {', '.join(sorted(bible.DEFAULT))}", "pair")
    source, target = parse_pair(pair)
    for lang in (source, target):
        if lang not in bible.DEFAULT:
            raise LmforgeError(f"{{setting}} names '{lang}', a language the Bible corpus does not have; use two "
                               f"of {', '.join(sorted(bible.DEFAULT))}", "pair", pair)
    if source == target:
        raise LmforgeError("{setting} pairs a language with itself; give two different languages, e.g. en-es",
                           "pair", pair)
    sources, targets, books, stats = bible.read_pairs(source, target, db)
    names = [bible.TRANSLATIONS[bible.DEFAULT[lang]].name for lang in (source, target)]
    return Pairs(sources, targets, books, source, target,
                 f"Bible verses, {names[0]} ({source}) -> {names[1]} ({target})", stats=stats)


def headline_pairs(documents: list[str]) -> tuple[list[str], list[str], dict]:
    """Each article's body (all after its first line, stripped) -> its headline (the first line);
    articles missing either are dropped."""
    bodies, headlines = [], []
    for doc in documents:
        head, _, body = doc.strip().partition("\n")
        if head.strip() and body.strip():
            bodies.append(body.strip())
            headlines.append(head.strip())
    return bodies, headlines, {"articles": len(documents), "dropped": len(documents) - len(bodies),
                               "pairs": len(bodies)}


def _file_pairs(path: Path, pair: str | None, source_column: str, target_column: str) -> Pairs:
    if path.suffix.lower() not in FILES:
        raise LmforgeError(f"'{path}' is not a .tsv, .csv or .jsonl file of pairs; give one, with a source and a "
                           "target column")
    try:
        sources, targets = _read_file(path, source_column, target_column)
    except LmforgeError as e:  # the reader names its own arguments: say which of ours set them
        if e.field in ("column", "label_column"):
            raise e.about("source_column" if e.field == "column" else "target_column") from None
        raise
    for name, arg, seq in (("source", "source_column", sources), ("target", "target_column", targets)):
        if seq and not any(s.strip() for s in seq):
            raise LmforgeError(f"the {name} column {{setting}} of {path} is empty in every row; point {{field}} "
                               f"at the column that holds the {name} texts", arg, source_column
                               if arg == "source_column" else target_column)
    keep = [i for i, (s, t) in enumerate(zip(sources, targets)) if s.strip() and t.strip()]
    if not keep:
        raise LmforgeError(f"{path} has no row with both a source and a target; give a file of pairs")
    source_lang, target_lang = parse_pair(pair) if pair is not None else (None, None)
    return Pairs([sources[i].strip() for i in keep], [targets[i].strip() for i in keep], None, source_lang,
                 target_lang, f"{path.name}: {source_column} -> {target_column}", rows=keep,
                 stats={"rows": len(sources), "dropped": len(sources) - len(keep), "pairs": len(keep)})


def load_pairs(spec: str, pair: str | None = None, source_column: str | None = None,
               target_column: str | None = None, task: str | None = None, db: str | Path | None = None) -> Pairs:
    """Pairs from "bible" (needs `pair`, e.g. "en-es"), "bbc-news" (body -> headline), or a file.

    `task`: "translate" or "summarize", checked against what a builtin holds (None: whatever it
    holds); a file's pairs serve either. `pair` on a file only records its languages. `db`: a
    bible.db to read instead of the cached download (tests)."""
    if task not in (None, "translate", "summarize"):
        raise LmforgeError("{setting} is not a pair task; use translate or summarize", "task", task)
    if spec in TASKS and task not in (None, TASKS[spec]):
        other = next(name for name, t in TASKS.items() if t == task)
        raise LmforgeError(f"'{spec}' holds pairs to {TASKS[spec]}, not to {task}; use '{other}' or a file of "
                           f"pairs for {task}", "task", task)
    if spec == "bible":
        return _bible_pairs(pair, db)
    if spec == "bbc-news":
        sources, targets, stats = headline_pairs(load_corpus("bbc-news").documents)
        return Pairs(sources, targets, None, "en", "en", "BBC News 2004-2005: article body -> headline",
                     stats=stats)
    path = Path(str(spec)).expanduser()
    if path.is_file():
        return _file_pairs(path, pair, source_column or "source", target_column or "target")
    if spec in BUILTIN:
        raise LmforgeError(f"corpus '{spec}' holds texts, not pairs; use bible (translation), bbc-news "
                           "(summarisation) or a .tsv/.csv/.jsonl file with source and target columns")
    raise LmforgeError(f"'{spec}' is neither a file nor a corpus of pairs; give a .tsv/.csv/.jsonl file with "
                       "source and target columns, or bible (with a pair such as en-es) or bbc-news")


# ---------------------------------------------------------------------------- splitting


def _pick_groups(order: list[str], sizes: dict[str, int], target: float, taken: set[str]) -> list[str]:
    """Groups from `order` (skipping `taken`) whose rows come nearest `target`: each is taken when it
    brings the count closer (count + size/2 < target); none so taken -> the smallest one left."""
    chosen, count = [], 0
    for g in order:
        if g not in taken and count + sizes[g] / 2 < target:
            chosen.append(g)
            count += sizes[g]
    if not chosen:
        left = [g for g in order if g not in taken]
        chosen = [min(left, key=lambda g: sizes[g])] if left else []
    return chosen


def split_pairs(pairs: Pairs, val_fraction: float = 0.1, test_fraction: float = 0.1,
                seed: int = 0) -> tuple[Pairs, Pairs, Pairs]:
    """Train, validation and test parts, each non-empty and each in the original order.

    With groups, whole groups are held out (a test verse never shares its book with a training
    verse): the distinct groups are put in a seeded random order, then test and validation each take
    groups in that order while a group brings their row count nearer test_fraction * n (resp.
    val_fraction * n); the rest is training. Whole groups make the shares only approximate.
    Without groups, rows are shuffled with the seed and the first round(test_fraction * n) (at least
    1) are the test part, the next round(val_fraction * n) (at least 1) the validation part.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise LmforgeError("{setting} cannot be used; give a share between 0 and 1, e.g. 0.1", name, value)
    if val_fraction + test_fraction >= 1:
        raise LmforgeError("{setting} and the test share leave nothing to train on; make the two shares sum to "
                           "less than 1, e.g. 0.1 each", "val_fraction", val_fraction)
    rng = np.random.default_rng(seed)
    n = len(pairs)
    if pairs.groups is None:
        if n < 3:
            raise LmforgeError(f"{n} pair(s) cannot be split into training, validation and test parts; give at "
                               "least 3")
        order = rng.permutation(n).tolist()
        n_test = min(max(1, round(test_fraction * n)), n - 2)
        n_val = max(1, min(round(val_fraction * n), n - n_test - 1))
        parts = [order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]]
    else:
        sizes: dict[str, int] = {}
        for g in pairs.groups:
            sizes[g] = sizes.get(g, 0) + 1
        names = list(sizes)
        order = [names[i] for i in rng.permutation(len(names))]
        test = _pick_groups(order, sizes, test_fraction * n, set())
        val = _pick_groups(order, sizes, val_fraction * n, set(test))
        held = dict.fromkeys(test, 2) | dict.fromkeys(val, 1)
        parts = [[i for i, g in enumerate(pairs.groups) if held.get(g, 0) == k] for k in (0, 1, 2)]
        if not all(parts):
            raise LmforgeError(f"{len(names)} group(s) cannot be held out whole into training, validation and "
                               "test parts; give more groups, or lower val_fraction and test_fraction")
    train, val, test = (pairs.subset(sorted(p), name) for p, name in zip(parts, ("train", "validation", "test")))
    return train, val, test
