"""Tokenizers: exact round trips in English and Chinese, one set of specials, save/load, errors."""

import pytest

from lmforge.errors import LmforgeError
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe, train_char, train_tokenizer

EN = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All: Speak, speak!\t(twice)"
ZH = "迈向充满希望的新世纪——一九九八年新年讲话。中共中央总书记、国家主席江泽民发表讲话！"
TEXTS = [EN * 5, ZH * 5, "naïve café — ½ ∑ 😀 emoji\r\n"]


def test_bpe_round_trip_is_exact_even_on_unseen_text():
    tok = train_bpe(TEXTS, vocab_size=300)
    for text in [EN, ZH, "完全没见过的字：龘 and ŋ ☃", "a<|endoftext|>b", ""]:
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text


def test_bpe_learns_merges():
    tok = train_bpe(TEXTS, vocab_size=400)
    assert len(tok.encode(EN)) < len(EN.encode()) / 1.5  # fewer tokens than bytes


def test_char_round_trip_and_unknown():
    tok = train_char(TEXTS)
    for text in [EN, ZH]:
        ids = tok.encode(text)
        assert len(ids) == len(text)
        assert tok.decode(ids) == text
    assert tok.encode("龘") == [tok.unk_id]


def test_specials_are_shared_and_have_ids():
    for tok in (train_bpe(TEXTS, 300), train_char(TEXTS)):
        for role, token in SPECIAL_TOKENS.items():
            assert getattr(tok, f"{role}_id") == tok.hf.token_to_id(token) is not None
        assert tok.encode("<|endoftext|>") == [tok.eos_id]
        assert len(tok.special_ids) == len(SPECIAL_TOKENS)


def test_save_load(tmp_path):
    for kind in ("bpe", "char"):
        tok = train_tokenizer(kind, TEXTS, 300)
        tok.save(tmp_path / f"{kind}.json")
        back = Tokenizer.load(tmp_path / f"{kind}.json")
        assert back.kind == kind and back.encode(EN) == tok.encode(EN)
        assert back.fingerprint() == tok.fingerprint()


def test_vocabulary_too_small_for_the_specials():
    with pytest.raises(LmforgeError, match="too small.*at least 263"):
        train_bpe(TEXTS, vocab_size=100)


def test_empty_text_and_bad_files(tmp_path):
    with pytest.raises(LmforgeError, match="empty"):
        train_bpe(["", ""], 300)
    with pytest.raises(LmforgeError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LmforgeError, match="not a valid tokenizer.json"):
        Tokenizer.load(bad)
    with pytest.raises(LmforgeError, match="unknown tokenizer kind"):
        train_tokenizer("sentencepiece", TEXTS)
