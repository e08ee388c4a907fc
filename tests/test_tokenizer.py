"""Tokenizers: exact round trips in English and Chinese, WordPiece, one set of specials, other
tokenizer.json files' specials, character offsets, save/load, errors."""

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers

from lmforge.errors import LmforgeError
from lmforge.tokenizer import (SPECIAL_TOKENS, TRAINABLE, Tokenizer, train_bpe, train_char, train_tokenizer, train_unigram,
                               train_wordpiece)

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
    for tok in (train_bpe(TEXTS, 300), train_wordpiece(TEXTS, 300), train_unigram(TEXTS, 120), train_char(TEXTS)):
        for role, token in SPECIAL_TOKENS.items():
            assert getattr(tok, f"{role}_id") == tok.hf.token_to_id(token) is not None
        assert tok.encode("<|endoftext|>") == [tok.eos_id]
        assert len(tok.special_ids) == len(SPECIAL_TOKENS)


def test_save_load(tmp_path):
    for kind in TRAINABLE:
        tok = train_tokenizer(kind, TEXTS, 120 if kind == "unigram" else 300)
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


# ---------------------------------------------------------------- WordPiece


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_wordpiece_round_trip_up_to_case_and_spacing():
    tok = train_wordpiece(TEXTS, 300)
    assert tok.kind == "wordpiece"
    # Lossy by design: lowercased, accents stripped, spaces around punctuation and CJK characters.
    assert squeeze(tok.decode(tok.encode(EN))) == squeeze(EN.lower())
    assert squeeze(tok.decode(tok.encode(ZH))) == ZH
    assert tok.decode(tok.encode("Naïve CAFÉ")) == "naive cafe"
    assert tok.unk_id in tok.encode("龘")  # a character never seen


def test_wordpiece_continuation_pieces_and_cjk_characters():
    tok = train_wordpiece(TEXTS, 300)
    pieces = [tok.hf.id_to_token(i) for i in tok.encode("speaker")]  # never seen whole
    assert len(pieces) > 1 and not pieces[0].startswith("##") and all(p.startswith("##") for p in pieces[1:])
    assert "".join(p.removeprefix("##") for p in pieces) == "speaker"
    ids, offsets = tok.encode_offsets(ZH)
    assert len(ids) == len(ZH) and all(e - s == 1 for s, e in offsets)  # one token per character
    ids, offsets = tok.encode_offsets("迈向充满")
    assert [tok.hf.id_to_token(i) for i in ids] == list("迈向充满") and offsets == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_encode_offsets_point_into_the_text():
    tok = train_wordpiece(TEXTS, 300)
    text = "Before we proceed, hear me  SPEAK!"
    ids, offsets = tok.encode_offsets(text)
    assert ids == tok.encode(text) and len(offsets) == len(ids)
    for i, (s, e) in zip(ids, offsets):
        assert text[s:e].lower() == tok.hf.id_to_token(i).removeprefix("##")
    batch = tok.encode_offsets_batch([text, "好"])
    assert batch[0] == (ids, offsets) and len(batch) == 2
    bpe = train_bpe(TEXTS, 300)
    ids, offsets = bpe.encode_offsets("hear me")
    assert offsets[0][0] == 0 and offsets[-1][1] == len("hear me")


def test_wordpiece_vocabulary_too_small():
    with pytest.raises(LmforgeError, match="too small for WordPiece on this text"):
        train_wordpiece(TEXTS, 40)  # the characters alone take more
    with pytest.raises(LmforgeError, match="at least 8"):
        train_tokenizer("wordpiece", TEXTS, 3)


# ---------------------------------------------------------------- other tokenizer.json files


def save_foreign(tmp_path, vocab, specials, name):
    hf = HFTokenizer(models.WordPiece(vocab=vocab, unk_token=specials[1]))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.add_special_tokens(specials)
    hf.save(str(tmp_path / name))
    return Tokenizer.load(tmp_path / name)


def test_bert_style_specials_map_to_roles(tmp_path):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + ["hello", "world", "##s", "<s>"])}
    tok = save_foreign(tmp_path, vocab, specials, "bert.json")
    assert tok.kind == "wordpiece"
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.bos_id is None and tok.eos_id is None  # '<s>' is an ordinary word here, not a special
    assert tok.special_ids == {0, 1, 2, 3, 4}
    assert tok.encode("Hello worlds") == [5, 6, 7]
    assert tok.encode("[CLS] hello [SEP]") == [2, 5, 3]


def test_roberta_style_specials_map_to_roles(tmp_path):
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials + ["hello"])}
    tok = save_foreign(tmp_path, vocab, specials, "roberta.json")
    assert (tok.pad_id, tok.unk_id, tok.mask_id) == (0, 1, 4)
    assert tok.cls_id == tok.bos_id == 2 and tok.sep_id == tok.eos_id == 3
    assert tok.special_ids == {0, 1, 2, 3, 4}


def test_unigram_round_trips_words_and_chinese_and_marks_word_starts():
    tok = train_unigram([EN * 5, ZH * 5, "señor café niño " * 20], 150, sentinels=3)
    for text in ("hear me speak", ZH[:12], "señor café"):
        assert tok.decode(tok.encode(text)) == text
    pieces = [tok.hf.id_to_token(i) for i in tok.encode("speak further")]
    assert "".join(pieces) == "\u2581speak\u2581further" and pieces[0] == "\u2581speak"
    assert tok.kind == "unigram" and len(tok.sentinel_ids) == 3 and tok.vocab_size <= 150
    assert tok.unk_id in tok.encode("\u0416")  # a character never seen
    with pytest.raises(LmforgeError, match="too small for Unigram"):
        train_unigram(TEXTS, 5)
