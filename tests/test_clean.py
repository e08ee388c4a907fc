"""Tests for lmforge.data.clean: normalisation, markup, control characters, dedupe."""

from lmforge.data.clean import CleanReport, clean_documents, clean_text


def test_nfkc_full_width():
    text, counts = clean_text("ＡＢＣ１，")
    assert text == "ABC1,"
    assert counts["nfkc_changed"] == 1
    assert clean_text("ＡＢＣ１", nfkc=False)[0] == "ＡＢＣ１"


def test_control_chars_removed_newline_and_tab_kept():
    text, counts = clean_text("a\x00b\x07c\u200bd\ufeffe\n\tf")
    assert text == "abcde\n\tf"
    assert counts["control_chars_removed"] == 4


def test_carriage_returns_become_newlines():
    assert clean_text("one\r\ntwo\rthree\n")[0] == "one\ntwo\nthree\n"


def test_markup_stripped_with_counts():
    html = "<p>Hello <b>world</b></p><script>var x = 1 < 2;</script><style>p {}</style><br/>end"
    text, counts = clean_text(html)
    assert "var x" not in text and "p {}" not in text
    assert "<" not in text and ">" not in text
    assert "Hello world" in text and text.strip().endswith("end")
    # <p>, <b>, </b>, </p>, <br/> + the script and style blocks
    assert counts["markup_removed"] == 7


def test_block_tags_keep_paragraphs_apart():
    text, _ = clean_text("<p>one</p><p>two</p>")
    assert text.split() == ["one", "two"]


def test_entities_decoded():
    assert clean_text("<p>Tom &amp; Jerry &lt;3 &#39;hi&#39;</p>")[0] == "\nTom & Jerry <3 'hi'\n"
    text, counts = clean_text("fish &amp; chips")
    assert text == "fish & chips" and counts["markup_removed"] == 1
    assert clean_text("AT&T and R&D")[0] == "AT&T and R&D"


def test_prose_with_angle_brackets_untouched():
    for prose in ("a < b and c > d", "if a<b and c>d then", "List<String> names", "x -> y <- z"):
        text, counts = clean_text(prose)
        assert text == prose and counts["markup_removed"] == 0


def test_strip_markup_off():
    assert clean_text("<p>x</p>", strip_markup=False)[0] == "<p>x</p>"


def test_ansi_codes_stripped():
    text, counts = clean_text("\x1b[1;31m红色\x1b[0m plain \x1b[32mgreen\x1b[m")
    assert text == "红色 plain green"
    assert counts["ansi_removed"] == 4 and counts["control_chars_removed"] == 0


def test_clean_documents_dedupe_order_and_empty():
    docs = ["b", "a", "  \n\t", "b", "<p></p>", "ｂ", "c", "\x00"]
    out, report = clean_documents(docs)
    assert out == ["b", "a", "c"]  # 'ｂ' becomes 'b' under NFKC and so is a duplicate
    assert isinstance(report, CleanReport)
    assert report.documents_in == 8 and report.documents_out == 3
    assert report.duplicates_removed == 2
    assert report.empty_removed == 3
    assert report.nfkc_changed == 1
    assert report.control_chars_removed == 1
    assert report.markup_removed == 2
    assert report.as_dict()["duplicates_removed"] == 2


def test_clean_documents_without_dedupe():
    out, report = clean_documents(["x", "x"], dedupe=False)
    assert out == ["x", "x"] and report.duplicates_removed == 0


def test_report_summary_names_what_was_removed():
    from lmforge.data.clean import clean_documents

    _, report = clean_documents(["a", "a", "  ", "<p>b</p>"])
    line = report.summary()
    assert line.startswith("cleaning: 2 of 4 documents kept;")
    assert "1 duplicates removed" in line and "1 empty removed" in line and "markup removed" in line
    assert clean_documents(["x"])[1].summary().endswith("nothing to change")


def test_the_doc_shows_what_the_code_does():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data-preparation.md").read_text(encoding="utf-8")
    en = "<p>Caf&eacute; \x1b[1;31mopen\x1b[0m today,</p><p>ﬁve tables free.</p>\r\n"
    zh = "<div>ＡＢＣ咖啡馆\u200b今天营业，１２３号桌空着。</div>"
    for text, counts in ((en, {"ansi_removed": 2, "markup_removed": 5, "nfkc_changed": 1}),
                         (zh, {"control_chars_removed": 1, "markup_removed": 2})):
        out, got = clean_text(text)
        assert f"    {text!r}\n" in doc and f"    {out!r} " in doc
        assert all(got[k] == v for k, v in counts.items())
