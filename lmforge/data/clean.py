"""Clean raw text before tokenising: newlines, ANSI codes, markup, NFKC, control characters, dedupe.

`clean_text` works on one string and returns per-call counts; `clean_documents` runs it over a
corpus, drops empty documents and exact duplicates, and sums the counts into a `CleanReport`.

Order matters, so it is fixed:
  1. '\\r\\n' and '\\r' -> '\\n'
  2. ANSI escape sequences (ESC[...m colour codes and other CSI sequences) go, before ESC itself
     would be dropped as a control character and leave '[31m' behind;
  3. markup is stripped and entities decoded, only when the text looks like markup, and before
     NFKC so that full-width '＜' never turns into a tag;
  4. NFKC, after unescaping so that decoded entities are normalised too;
  5. control characters (Unicode Cc and Cf except '\\n' and '\\t') are removed last.
"""

from __future__ import annotations

import html
import re
import sys
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Iterator

__all__ = ["CleanReport", "clean_text", "clean_documents"]

# CSI sequences: ESC '[' parameter bytes, intermediate bytes, one final byte (ECMA-48).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

_NAME = r"[A-Za-z][A-Za-z0-9:_.-]*"
_ATTR = r"""(?:\s+[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)"""
# A tag starts right after '<' with a letter (or '/' + letter): "a < b and c > d" has a space
# after '<' and so is never a tag.
_TAG = re.compile(rf"<(?:{_NAME}{_ATTR}*\s*/?|/{_NAME}\s*)>")
# Spans removed whole, each an opener and what closes it (the nearest closer after the opener):
# blocks whose content is not text at all, comments, then declarations (CDATA, <!DOCTYPE ...>,
# processing instructions <?...?>). `_spans` finds them, not one regex each such as "<!--.*?-->":
# a regex engine retries an unclosed opener at every later opener and scans to the end each time,
# so 1 MB of "<!--" took hours.
Closer = Callable[[str, int], "int | None"]  # (text, end of the opener) -> end of the span, or None


def _closed_by(pattern: str) -> Closer:
    found = re.compile(pattern, re.IGNORECASE).search
    return lambda text, pos: (m := found(text, pos)) and m.end()


def _element(name: str) -> tuple[re.Pattern[str], Closer]:
    """<name ...> ... </name >: the opening tag ends at the first '>', the block at the first closing tag."""
    closing = _closed_by(rf"</{name}\s*>")
    return re.compile(rf"<{name}\b", re.IGNORECASE), lambda text, pos: (
        None if (gt := text.find(">", pos)) < 0 else closing(text, gt + 1))


_BLOCKS = [_element("script"), _element("style")]
_COMMENTS = [(re.compile("<!--"), _closed_by("-->"))]
_DECLS = [(re.compile(r"<!\[CDATA\["), _closed_by(r"\]\]>")), (re.compile("<![A-Za-z]"), _closed_by(">")),
          (re.compile(r"<\?"), _closed_by(r"\?>"))]
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Tags that separate blocks of text: replaced by a newline so that paragraphs do not run together.
_BREAKING = re.compile(
    r"</?(?:p|br|div|li|ul|ol|tr|table|h[1-6]|blockquote|pre|section|article|header|footer|hr)\b",
    re.IGNORECASE,
)
_MANY_NEWLINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
# Evidence that a text really is markup, stronger than one '<word ...>': a closing tag, a
# self-closing tag, an attribute with a value, or a bare HTML element such as '<p>'. Prose such as
# "a<b and c>d" or "List<String>" gives none of these.
_HTML_ELEMENTS = (
    "html|head|body|title|meta|link|p|br|hr|div|span|a|b|i|u|em|strong|small|sub|sup|code|pre|"
    "blockquote|ul|ol|li|dl|dt|dd|table|thead|tbody|tr|td|th|h[1-6]|img|section|article|header|"
    "footer|nav|main|aside|figure|figcaption|form|input|button|label|select|option|textarea|"
    "script|style|font|center|tt"
)
_EVIDENCE = re.compile(
    rf"</{_NAME}\s*>|<{_NAME}{_ATTR}*\s*/>|<{_NAME}{_ATTR}*\s+[^\s\"'<>/=]+\s*=[^<>]*>"
    rf"|<(?:{_HTML_ELEMENTS})>",
    re.IGNORECASE,
)


@dataclass
class CleanReport:
    """What `clean_documents` removed or changed, summed over all documents."""

    documents_in: int = 0
    documents_out: int = 0
    duplicates_removed: int = 0
    empty_removed: int = 0
    control_chars_removed: int = 0
    ansi_removed: int = 0
    markup_removed: int = 0  # tags, script/style blocks, comments and entities
    nfkc_changed: int = 0  # documents that NFKC changed
    near_duplicates_removed: int = 0  # with near > 0: documents in a cluster of near-copies, but its first

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the terminal: what was removed or changed, or that nothing was."""
        parts = [f"{v:,} {k.replace('_', ' ')}" for k, v in self.as_dict().items()
                 if k not in ("documents_in", "documents_out") and v]
        kept = f"{self.documents_out:,} of {self.documents_in:,} documents kept"
        return f"cleaning: {kept}; " + (", ".join(parts) if parts else "nothing to change")


@lru_cache(maxsize=1)
def _control_re() -> re.Pattern[str]:
    """Character class of every Cc/Cf code point except newline and tab (built once, lazily)."""
    cats = ("Cc", "Cf")
    codes = [
        c for c in range(sys.maxunicode + 1)
        if c not in (0x09, 0x0A) and unicodedata.category(chr(c)) in cats
    ]
    # Collapse into ranges to keep the class short.
    parts, start, prev = [], codes[0], codes[0]
    for c in codes[1:] + [-1]:
        if c == prev + 1:
            prev = c
            continue
        parts.append(re.escape(chr(start)) if start == prev
                     else f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
        start = prev = c
    return re.compile("[" + "".join(parts) + "]")


def _spans(text: str, kinds: list[tuple[re.Pattern[str], Closer]]) -> Iterator[tuple[int, int]]:
    """(start, end) of each span that one of `kinds` opens and the nearest closer after it ends,
    leftmost first, not overlapping. Linear: each kind's next opener is searched for once per
    span, and when a kind's closer is missing after one opener it is missing after every later
    one too, so that kind is searched no further."""
    pos, ahead = 0, {i: None for i in range(len(kinds))}  # kind -> its next opener at or after pos
    while ahead:
        for i, m in list(ahead.items()):
            if m is None or m.start() < pos:
                ahead[i] = kinds[i][0].search(text, pos)
                if ahead[i] is None:
                    del ahead[i]
        if not ahead:
            return
        i = min(ahead, key=lambda k: (ahead[k].start(), k))
        end = kinds[i][1](text, ahead[i].end())
        if end is None:
            del ahead[i]
            continue
        yield ahead[i].start(), end
        pos = end


def _remove_spans(text: str, kinds: list[tuple[re.Pattern[str], Closer]]) -> tuple[str, int]:
    """`text` without the spans of `_spans`, and how many there were."""
    parts, pos, n = [], 0, 0
    for start, end in _spans(text, kinds):
        parts.append(text[pos:start])
        pos, n = end, n + 1
    return "".join(parts) + text[pos:], n


def looks_like_markup(text: str) -> bool:
    """True when the text holds a convincing HTML/XML tag, a comment or a declaration."""
    return bool(_EVIDENCE.search(text) or any(next(_spans(text, k), None) for k in (_COMMENTS, _DECLS)))


def _strip_markup(text: str) -> tuple[str, int]:
    """Remove tags, script/style blocks, comments and declarations; decode entities."""
    removed = 0
    if looks_like_markup(text):
        for kinds in (_BLOCKS, _COMMENTS, _DECLS):
            text, n = _remove_spans(text, kinds)
            removed += n

        def tag(m: re.Match[str]) -> str:
            return "\n" if _BREAKING.match(m.group(0)) else ""

        text, n = _TAG.subn(tag, text)
        removed += n
        if n:
            # Block tags became newlines; keep at most one blank line between paragraphs.
            text = _MANY_NEWLINES.sub("\n\n", text)

    decoded = 0

    def entity(m: re.Match[str]) -> str:
        nonlocal decoded
        out = html.unescape(m.group(0))
        if out != m.group(0):  # unknown names such as '&foo;' are left as they are
            decoded += 1
        return out

    # Well-formed entities ('&amp;', '&#39;') are escapes even without tags around them.
    text = _ENTITY.sub(entity, text)
    return text, removed + decoded


def clean_text(text: str, *, nfkc: bool = True, strip_markup: bool = True) -> tuple[str, dict]:
    """Clean one string; return it with counts: control_chars_removed, ansi_removed,
    markup_removed, nfkc_changed (0 or 1)."""
    counts = {"control_chars_removed": 0, "ansi_removed": 0, "markup_removed": 0, "nfkc_changed": 0}
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x1b" in text:
        text, counts["ansi_removed"] = _ANSI.subn("", text)
    if strip_markup and ("<" in text or "&" in text):
        text, counts["markup_removed"] = _strip_markup(text)
        # A decoded '&#13;' is a carriage return too.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if nfkc and not text.isascii():  # ASCII is already NFKC: skip the work
        normal = unicodedata.normalize("NFKC", text)
        counts["nfkc_changed"] = int(normal != text)
        text = normal
    if not text.isprintable():  # fast path: printable text holds no Cc/Cf at all
        text, counts["control_chars_removed"] = _control_re().subn("", text)
    return text, counts


def paragraphs(docs: list[str]) -> list[str]:
    """A corpus of one document (a .txt file) as its blank-line separated paragraphs; others as they are."""
    if len(docs) != 1:
        return docs
    return [p.strip() for p in re.split(r"\n[ \t]*\n", docs[0]) if p.strip()]


def clean_documents(
    docs: list[str], *, nfkc: bool = True, strip_markup: bool = True, dedupe: bool = True, near: float = 0.0
) -> tuple[list[str], CleanReport]:
    """Clean every document, drop the empty ones and exact duplicates (first one kept, order kept);
    with `near` > 0, also every near-copy of an earlier document (shingle Jaccard >= near: data/dedupe.py)."""
    report = CleanReport(documents_in=len(docs))
    seen: set[str] = set()
    out: list[str] = []
    for doc in docs:
        text, counts = clean_text(doc, nfkc=nfkc, strip_markup=strip_markup)
        for key, value in counts.items():
            setattr(report, key, getattr(report, key) + value)
        if not text.strip():
            report.empty_removed += 1
            continue
        if dedupe:
            if text in seen:
                report.duplicates_removed += 1
                continue
            seen.add(text)
        out.append(text)
    if near > 0:
        from lmforge.data.dedupe import remove_near_duplicates

        out, found = remove_near_duplicates(out, near)
        report.near_duplicates_removed = sum(len(c.removed) for c in found)
    report.documents_out = len(out)
    return out, report
