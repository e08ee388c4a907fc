"""Faults a user can cause in chat templates, tokenizer files and corpus text: each is one
LmforgeError (or simply harmless), never a traceback, a hang or a silently changed text."""

import time

import pytest

from lmforge.data.clean import clean_text

MB = 1_000_000


# --- cleaning is linear in its input -------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["<!--", "<?", "<", "&#", "<![CDATA[", "<!a", "<script>", "<style",
                                  "<!--<?<script><![CDATA[<!x<style"])
def test_cleaning_a_megabyte_of_unclosed_markup_takes_seconds(unit):
    text = "<p>x</p>" + unit * (MB // len(unit))  # with evidence of markup, so every stripping step runs
    start = time.perf_counter()
    out, _ = clean_text(text)
    assert time.perf_counter() - start < 5, unit  # quadratic took minutes to hours here
    if unit in ("<!--", "<?"):
        assert out == "\nx\n" + text[8:]  # an opener never closed is text, as before


def test_closed_spans_are_still_removed_leftmost_first():
    text, counts = clean_text("<p>a<!-- c --> b <?pi ?> c<![CDATA[x]]><!DOCTYPE html> d<script>s</SCRIPT > e</p>")
    assert text.split() == ["a", "b", "c", "d", "e"] and counts["markup_removed"] == 7
    assert clean_text("<p>x</p><?a <![CDATA[ ?> ]]>")[0].split() == ["x", "]]>"]  # the first opener wins


# --- a tokenizer.json never pads or cuts corpus text ---------------------------------------------------
def test_a_tokenizer_json_with_padding_and_truncation_neither_pads_nor_cuts_corpus_text(tmp_path):
    from lmforge.config import DataConfig
    from lmforge.data.shards import prepare
    from lmforge.tokenizer import Tokenizer, train_char

    path = tmp_path / "tokenizer.json"
    tok = train_char(["abcdefgh \n"])
    tok.hf.enable_padding(length=64, pad_id=tok.pad_id, pad_token="<|pad|>")
    tok.hf.enable_truncation(max_length=4)
    tok.hf.save(str(path))
    loaded = Tokenizer.load(path)
    assert len(loaded.encode("abcdefgh")) == 8 and [len(x) for x in loaded.encode_batch(["abc", "abcdefgh"])] == [3, 8]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefgh " * 500)
    data = prepare(DataConfig(corpus=str(corpus), tokenizer=str(path), clean=False), log=lambda *_: None)
    assert len(data.train) + len(data.val) == len("abcdefgh " * 500) + 2  # every character, one eos per split
    assert tok.pad_id not in set(data.train.tolist()) | set(data.val.tolist())
