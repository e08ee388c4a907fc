"""Anonymisation (lmforge.data.anonymize, `lmforge data anonymize`): the checks by hand, every kind in
English and Chinese, near-misses left alone, the three modes, the file formats, and bad input."""

import csv
import json

import pytest

from lmforge.cli import main
from lmforge.data.anonymize import anonymize_file, anonymize_text, digest, find_spans, luhn_ok, resident_id_ok

EN = ("Write to bob.smith@example.com or call (555) 123-4567, or +44 20 7946 0958. Card 4111 1111 1111 1111. "
      "Server 192.168.1.20, docs at https://example.com/a?b=1.")
ZH = "张三的身份证号是11010519491231002X，手机13812345678，邮箱zhang@163.com，网址www.example.cn。"


def test_the_checks_by_hand():
    # Luhn on 79927398713: doubled from the right 1 -> 2, 8 -> 16 - 9 = 7, ...: the sum is 70
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    # 11010519491231002 weighted by 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 sums to 167; 167 mod 11 = 2 -> "X"
    assert sum(int(d) * w for d, w in zip("11010519491231002", [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])) == 167
    assert resident_id_ok("11010519491231002X") and not resident_id_ok("110105194912310021")
    assert not resident_id_ok("11010519491331002X")  # month 13


def kinds(text):
    return [(s.type, s.text) for s in find_spans(text)]


def test_every_kind_in_english_and_chinese():
    assert kinds(EN) == [("email", "bob.smith@example.com"), ("phone", "(555) 123-4567"), ("phone", "+44 20 7946 0958"),
                         ("card", "4111 1111 1111 1111"), ("ip", "192.168.1.20"), ("url", "https://example.com/a?b=1")]
    assert kinds(ZH) == [("id", "11010519491231002X"), ("phone", "13812345678"), ("email", "zhang@163.com"),
                         ("url", "www.example.cn")]


def test_a_url_ends_where_chinese_text_goes_on():
    """Chinese runs on without spaces: a URL stops at the first CJK character (bench.data found this)."""
    assert kinds("请联系http://www.a.cn/或13812345678，也可以访问www.b.com获取11010519491231002X的信息。") == [
        ("url", "http://www.a.cn/"), ("phone", "13812345678"), ("url", "www.b.com"), ("id", "11010519491231002X")]


@pytest.mark.parametrize("text", ["Card 4111 1111 1111 1112 fails Luhn.", "ID 110105194912310021 has a bad check.",
                                  "Version 999.1.1.1 is no address.", "In 1599 the play ran 42 nights.",
                                  "Price: 12.50, item 2024-05-01."])
def test_near_misses_are_left_alone(text):
    assert find_spans(text) == []


def test_real_prose_has_almost_nothing_private(shakespeare_text):
    text = shakespeare_text[:200_000]
    assert len(find_spans(text)) <= 2


def test_the_three_modes():
    masked, found = anonymize_text(ZH, mode="mask")
    assert masked == "张三的身份证号是[ID]，手机[PHONE]，邮箱[EMAIL]，网址[URL]。" and found == {"id": 1, "phone": 1, "email": 1, "url": 1}
    hashed, _ = anonymize_text("a@b.com and a@b.com", mode="hash")
    assert hashed == f"[EMAIL:{digest('a@b.com')}] and [EMAIL:{digest('a@b.com')}]"
    pytest.importorskip("faker")
    text = "bob@example.com wrote to ann@example.org; bob@example.com answered."
    replaced, _ = anonymize_text(text, mode="replace", seed=1)
    fakes = [s.text for s in find_spans(replaced)]
    assert len(fakes) == 3 and fakes[0] == fakes[2] != fakes[1]  # the same person keeps one fake address
    assert "bob@example.com" not in replaced
    chinese, _ = anonymize_text("手机13812345678", mode="replace")
    assert [s.type for s in find_spans(chinese)] == ["phone"] and "13812345678" not in chinese


@pytest.mark.parametrize("locale", ["en_US", "zh_CN"])
def test_recall_on_generated_values(locale):
    faker = pytest.importorskip("faker")
    f = faker.Faker(locale)
    f.seed_instance(7)
    makers = {"email": f.email, "phone": f.phone_number, "card": f.credit_card_number, "ip": f.ipv4, "url": f.url}
    if locale == "zh_CN":
        makers["id"] = f.ssn
    for kind, make in makers.items():
        values = [make() for _ in range(300)]
        frame = "Please contact {} today." if locale == "en_US" else "请联系{}，谢谢。"
        hits = sum(any(s.type == kind and s.text == v for s in find_spans(frame.format(v))) for v in values)
        assert hits / len(values) >= 0.98, (kind, hits)


def test_files_keep_their_format(tmp_path):
    rows = [{"id": 1, "text": "mail a@b.com", "label": "x"}, {"id": 2, "text": "call 13812345678", "label": "y"}]
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = anonymize_file(src, tmp_path / "out.jsonl")
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [g["text"] for g in got] == ["mail [EMAIL]", "call [PHONE]"] and [g["label"] for g in got] == ["x", "y"]
    assert r["documents"] == 2 and r["found"]["email"] == 1 and r["total"] == 2
    table = tmp_path / "rows.csv"
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([["text", "label"], ["ip 10.0.0.1, ok", "a"]])
    anonymize_file(table, tmp_path / "out.csv", types="ip")
    assert list(csv.reader((tmp_path / "out.csv").open())) == [["text", "label"], ["ip [IP], ok", "a"]]


def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "a.txt"
    src.write_text("mail a@b.com")
    out = tmp_path / "out.txt"
    for argv, words in [(["--types", "email,name"], "not a kind"), (["--column", "body"], None)]:
        assert main(["data", "anonymize", str(src), "--out", str(out), *argv]) == (2 if words else 0)
        if words:
            assert words in capsys.readouterr().err and not out.exists()
    out.unlink()
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00binary")
    assert main(["data", "anonymize", str(binary), "--out", str(out)]) == 2 and not out.exists()
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["data", "anonymize", str(src), "--out", str(src)]) == 2 and src.read_text() == "mail a@b.com"
    rows = tmp_path / "r.jsonl"
    rows.write_text('{"body": "x"}\n')
    assert main(["data", "anonymize", str(rows), "--out", str(out)]) == 2 and not out.exists()
    assert "--column" in capsys.readouterr().err


def test_a_recipe_with_data_anonymize_never_tokenises_the_private_values(tmp_path):
    from lmforge.config import DataConfig
    from lmforge.data.shards import prepare

    corpus = tmp_path / "mail.txt"
    corpus.write_text("\n\n".join(f"Letter {i}: write to person{i}@example.com or call 13812345{i:03d}." for i in range(60)))
    data = prepare(DataConfig(corpus=str(corpus), tokenizer="char", anonymize=True, val_fraction=0.2), log=lambda *a: None)
    text = data.tokenizer.decode(list(data.train)) + data.tokenizer.decode(list(data.val))
    assert "[EMAIL]" in text and "[PHONE]" in text and "@example.com" not in text and "13812345" not in text


def test_the_doc_shows_what_the_code_does():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data-preparation.md").read_text(encoding="utf-8")
    digits = [int(c) for c in reversed("79927398713")]
    doubled = [(d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d for i, d in enumerate(digits)]
    assert sum(doubled) == 70 and "= 70 is a multiple of 10" in " ".join(doc.split())
    assert sum(doubled) - 3 == 67 and "the sum is 67" in " ".join(doc.split())
    assert "the weighted sum is 167, 167 mod 11 = 2" in doc
    for text in ("Write to bob.smith@example.com or call (555) 123-4567. Card 4111 1111 1111 1111, server 192.168.1.20.",
                 "张三的身份证号是11010519491231002X，手机13812345678，邮箱zhang@163.com。"):
        assert text in doc
        for mode in ("mask", "hash"):
            assert anonymize_text(text, mode=mode)[0] in doc
