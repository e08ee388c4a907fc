"""Private data in text found and masked, replaced or hashed before anyone trains on it.

Each kind is a pattern, and where the kind has one, the check its issuer built into it, so a number
that merely looks right is left alone:

    email    name@domain.tld
    url      http(s)://... or www...., up to a space, a quote or a CJK character
    ip       IPv4, each of its four numbers 0-255; IPv6 in its colon form
    id       a Chinese resident ID: 6 region digits, a real birth date YYYYMMDD, 3 sequence digits and
             a check character, sum_i d_i w_i mod 11 with w = 2^(17 - i) mod 11, mapped through
             "10X98765432" (ISO 7064 MOD 11-2)
    card     12-19 digits, bare or in groups of four (Amex: 4-6-5), passing Luhn's check: double every second
             digit from the right (subtracting 9 above 9), and the sum is a multiple of 10
    phone    a Chinese mobile number (1[3-9] and 9 digits, +86 before it or not), or an international
             or North American one (+CC and 7-14 digits, or (NNN) NNN-NNNN and its variants)

    person   a person's name, and
    address  a postal address: no pattern finds these, so a tagger does (a token-classification run
             trained on `lmforge data pii-examples`, data/pii.py), after the patterns

Where spans overlap, the kind earlier in that list wins (a URL holds what looks like an e-mail
address; an ID's 18 digits may also pass Luhn's check, and the ID's check is the stricter one).

    mask     the span becomes its type's tag: [EMAIL]
    replace  a fake value of the same kind (Faker, en_US or zh_CN by the text's script); the same
             value gets the same fake within one document, so a text still says who wrote to whom
    hash     [EMAIL:3f2a9c1b]: the first 8 hex digits of SHA-256 of the value, the same everywhere
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.data.pii import TAGGED
from lmforge.data.rowfiles import read_rows, rewrite

PATTERN_TYPES = ("url", "email", "ip", "id", "card", "phone")  # in priority order
PATTERNS = ("email", "phone", "id", "card", "ip", "url")  # found without a model: the default --types
TYPES = PATTERNS + TAGGED  # person and address: by a tagger (data/pii.py), after the patterns
MODES = ("mask", "replace", "hash")

_PATTERNS = {
    # a URL ends at a CJK character: Chinese text runs on without a space ("请访问http://a.cn/或致电...")
    "url": re.compile(r"\b(?:https?://|www\.)[^\s<>\"'\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]+", re.I | re.A),
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", re.A),
    "ip": re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]\d)|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])",
                     re.A),
    "card": re.compile(r"(?<![\d-])(?:\d{12,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{5})(?![\d-])",
                       re.A),
    "id": re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])", re.A),
    "phone": re.compile(r"(?<![\w+])(?:(?:\+|00)86[ -]?)?1[3-9]\d{9}(?!\d)"
                        r"|(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d+\)?){2,6}(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?!\d)"
                        r"|(?<![\w+])(?:(?:\+?1|001)[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?!\d)",
                        re.A),
}
_TRAILING = ".,;:!?)]}'\"。，；：！？）"
_ID_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str
    text: str


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def resident_id_ok(value: str) -> bool:
    """A Chinese resident ID's birth date and its check character (module docstring)."""
    try:
        datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    check = "10X98765432"[sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS)) % 11]
    return value[17].upper() == check


def _valid(kind: str, value: str) -> bool:
    if kind == "ip" and "." in value:
        return all(0 <= int(part) <= 255 and (part == "0" or not part.startswith("0")) for part in value.split("."))
    if kind == "card":
        digits = re.sub(r"\D", "", value)
        return 12 <= len(digits) <= 19 and luhn_ok(digits)
    if kind == "id":
        return resident_id_ok(value)
    if kind == "phone":  # E.164 allows 15 digits at most, an extension besides
        return 7 <= sum(c.isdigit() for c in re.split(r"\s*(?:x|ext)", value)[0]) <= 15
    return True


def check_types(types) -> tuple[str, ...]:
    """The --types asked for, each one known."""
    chosen = tuple(t.strip().lower() for t in (types.split(",") if isinstance(types, str) else types) if t.strip())
    unknown = [t for t in chosen if t not in TYPES]
    if unknown or not chosen:
        raise LmforgeError(f"--types {','.join(unknown) or '(none)'} is not a kind anonymize knows; choose from "
                           f"{','.join(TYPES)}")
    return chosen


def find_spans(text: str, types=PATTERNS, tagged=()) -> list[Span]:
    """The private spans of `text`, left to right, none overlapping (earlier kinds win): the patterns'
    first, then the `tagged` spans (type, start, end) a tagger found, of the kinds in `types`."""
    taken: list[Span] = []
    for kind in PATTERN_TYPES:
        if kind not in types:
            continue
        for m in _PATTERNS[kind].finditer(text):
            start, end = m.start(), m.end()
            while end > start and text[end - 1] in _TRAILING and kind in ("url", "phone"):
                end -= 1
            value = text[start:end]
            if _valid(kind, value) and not any(s.start < end and start < s.end for s in taken):
                taken.append(Span(start, end, kind, value))
    for kind, start, end in tagged:
        if kind in types and not any(s.start < end and start < s.end for s in taken):
            taken.append(Span(start, end, kind, text[start:end]))
    return sorted(taken, key=lambda s: s.start)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]


class _Fakes:
    """Fake values for one document: the same value always gets the same fake."""

    def __init__(self, text: str, seed: int):
        try:
            from faker import Faker
        except ImportError:
            raise LmforgeError("--mode replace makes fake values with Faker; install it (pip install 'lmforge[data]') "
                               "or use --mode mask or hash") from None
        chinese = any("\u4e00" <= c <= "\u9fff" for c in text)
        self.fake = Faker("zh_CN" if chinese else "en_US")
        self.fake.seed_instance(seed)
        self.made: dict[tuple[str, str], str] = {}

    def __call__(self, span: Span) -> str:
        key = (span.type, span.text)
        if key not in self.made:
            f = self.fake
            make = {"email": f.email, "url": f.url, "ip": f.ipv4 if "." in span.text else f.ipv6,
                    "card": f.credit_card_number, "id": f.ssn, "phone": f.phone_number, "person": f.name,
                    "address": f.address}[span.type]
            self.made[key] = " ".join(make().split("\n"))  # an address's lines on one line
        return self.made[key]


def anonymize_text(text: str, types=PATTERNS, mode: str = "mask", seed: int = 0, tagger=None) -> tuple[str, Counter]:
    """`text` with its private spans masked, replaced or hashed, and how many of each kind were found.
    tagger: for person and address, a function from texts to their tagged spans (train/predict.py's
    entity_tagger over a token-classification run)."""
    if mode not in MODES:
        raise LmforgeError(f"--mode {mode} is not known; use mask, replace or hash")
    needs_tagger(types, tagger)
    spans = find_spans(text, types, tagger([text])[0] if tagger and set(types) & set(TAGGED) else ())
    fakes = _Fakes(text, seed) if mode == "replace" and spans else None
    out, last = [], 0
    for s in spans:
        out.append(text[last:s.start])
        tag = s.type.upper()
        out.append(f"[{tag}]" if mode == "mask" else f"[{tag}:{digest(s.text)}]" if mode == "hash" else fakes(s))
        last = s.end
    out.append(text[last:])
    return "".join(out), Counter(s.type for s in spans)


def anonymize_documents(docs: list[str], log=print) -> list[str]:
    """`data.anonymize=true`: every kind masked in every document before tokenising, and one line
    saying what was found."""
    found: Counter = Counter()
    out = []
    for d in docs:
        new, counts = anonymize_text(d)
        out.append(new)
        found.update(counts)
    log("anonymize: " + (", ".join(f"{n} {t}" for t, n in sorted(found.items())) or "nothing private") + " masked")
    return out


def needs_tagger(types, tagger) -> None:
    wanted = [t for t in TAGGED if t in types]
    if wanted and tagger is None:
        raise LmforgeError(f"{' and '.join(wanted)} are found by a tagger, not a pattern: give --tagger RUN, a "
                           "token-classification run (`lmforge data pii-examples` writes its training data)")


def anonymize_file(path: str | Path, out: str | Path, types=PATTERNS, mode: str = "mask", column: str = "text",
                   seed: int = 0, tagger=None) -> dict:
    """A text file anonymised into `out` in the same format: a .txt as one document, each row of a
    .jsonl / .csv / .tsv as one (its `column` anonymised, the other fields kept). Returns the report:
    what was found, per kind. `out` is written whole or not at all."""
    types = check_types(types)
    if mode not in MODES:
        raise LmforgeError(f"--mode {mode} is not known; use mask, replace or hash")
    needs_tagger(types, tagger)
    if tagger is not None and set(types) & set(TAGGED):  # tag every row in batches, once
        texts, batch = [r[column] for r in read_rows(path, column, "anonymize")], tagger
        known = dict(zip(texts, batch(texts)))
        tagger = lambda ts: [known[t] if t in known else batch([t])[0] for t in ts]  # noqa: E731
    found: Counter = Counter()
    documents = 0

    def clean(t: str, i: int, row) -> list[str]:
        nonlocal documents
        documents += 1
        new, counts = anonymize_text(t, types, mode, seed + i, tagger)
        found.update(counts)
        return [new]

    rewrite(path, out, column, clean, "anonymize")
    return {"input": str(path), "out": str(out), "mode": mode, "types": list(types), "documents": documents,
            "found": {t: found.get(t, 0) for t in types}, "total": sum(found.values())}
