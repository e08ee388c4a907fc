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


# --- chat templates: any fault is one error, rendering is bounded ----------------------------------------
FAULTS = {
    "division by zero": "{{ 1/0 }}",
    "include without a loader": "{% include 'x' %}",
    "huge range": "{{ range(10**9)|list }}",
    "endless recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "syntax": "{% if %}",
    "undefined attribute": "{{ messages[7].content.x }}",
}
TOO_BIG = {
    "output": "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "string doubled by ~": "{% set ns = namespace(s='x') %}{% for i in range(26) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "string multiplied": "{{ ('ab' * 10**8)|length }}",
    "format width": "{{ '%99999999s'|format(1) }}{{ '{:>99999999}'.format(1) }}",
    "replace that multiplies": "{{ (('x' * 10000)|replace('x', 'y' * 10000))|length }}",
    "captured block": "{% set x %}{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}{{ x|length }}",
    "one string many times in a list": "{% set a = 'x' * 500000 %}{% set b = [a, a, a, a, a, a, a, a] %}{{ b|length }}{{ b }}",
}


@pytest.mark.parametrize("source", list(FAULTS.values()) + list(TOO_BIG.values()), ids=list(FAULTS) + list(TOO_BIG))
def test_a_chat_template_that_fails_or_grows_too_big_is_one_error(source):
    from lmforge.chat import HFChatTemplate
    from lmforge.errors import LmforgeError

    with pytest.raises(LmforgeError, match="chat template"):
        HFChatTemplate(source).render([("user", "hi")])


def test_a_chat_template_that_runs_too_long_is_stopped_in_time(monkeypatch):
    from lmforge import chat_jinja
    from lmforge.chat import HFChatTemplate
    from lmforge.errors import LmforgeError

    monkeypatch.setattr(chat_jinja, "RENDER_SECONDS", 0.2)
    for source in ("{% for a in range(100000) %}{% for b in range(100) %}{% endfor %}{% endfor %}",  # 10^7 steps
                   "{% set l = range(1000)|list %}{% for a in l %}{% for b in l %}{% for c in l[:10] %}{% endfor %}"
                   "{% endfor %}{% endfor %}"):
        start = time.perf_counter()
        with pytest.raises(LmforgeError, match="ran for over 0.2 s"):
            HFChatTemplate(source).render([("user", "hi")])
        assert time.perf_counter() - start < 1.5


def test_a_template_error_leaves_the_chat_going():
    from types import SimpleNamespace

    from lmforge.chat import Chat, HFChatTemplate
    from lmforge.errors import LmforgeError
    from lmforge.tokenizer import train_char

    class LM:  # what Chat asks of an lmforge.api.LM
        config, tokenizer = SimpleNamespace(context_length=64), train_char(["abcdefghijklmnopqrstuvwxyz "])

        def generate_config(self, *args, **kwargs):
            pass

        def stream(self, ids, max_new_tokens, stop=(), **sampling):
            yield "fine"

    chat = Chat(LM(), template=HFChatTemplate("{{ 1/0 if messages[-1].content == 'boom' }}{{ messages[-1].content }}"))
    with pytest.raises(LmforgeError, match="ZeroDivisionError"):
        list(chat.send("boom"))
    assert "".join(chat.send("hello")) == "fine" and chat.turns == [("user", "hello"), ("assistant", "fine")]


@pytest.mark.parametrize("name, content, error", [
    ("tokenizer_config.json", b"[1, 2]", "not an object"),
    ("tokenizer_config.json", b'"chat"', "not an object"),
    ("tokenizer_config.json", b'{"chat_template": "\xff"}', "not UTF-8"),
    ("chat_template.jinja", b"\xff\xfe{{ messages }}", "not UTF-8"),
])
def test_a_template_file_that_is_not_what_it_should_be_is_one_error(tmp_path, name, content, error):
    from lmforge.chat import hf_chat_template
    from lmforge.errors import LmforgeError

    (tmp_path / name).write_bytes(content)
    with pytest.raises(LmforgeError, match=error):
        hf_chat_template(tmp_path)
