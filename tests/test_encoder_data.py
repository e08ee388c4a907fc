"""Encoder pretraining data: sentences, the split by document, words from the corpus / jieba / pre-tokens."""

import json

import numpy as np
import pytest
import torch

from lmforge.config import DataConfig
from lmforge.data import encoder
from lmforge.data.corpora import Corpus
from lmforge.data.encoder import encode_split, prepare_encoder, split_by_document, split_sentences
from lmforge.data.masking import IGNORE, mask_tokens
from lmforge.data.pairs import PairBatches
from lmforge.errors import LmforgeError
from lmforge.tokenizer import train_bpe, train_wordpiece


def sentences(text, language="en"):
    return [text[s:e] for s, e in split_sentences(text, language)]


def groups(split, tok, lo=0, hi=None):
    """The text of each word of tokens lo:hi (pieces joined, '##' dropped), in order."""
    out, prev = [], None
    for i, w in zip(split.tokens[lo:hi], split.word_ids[lo:hi]):
        piece = tok.hf.id_to_token(int(i)).removeprefix("##")
        if w == prev:
            out[-1] += piece
        else:
            out.append(piece)
        prev = w
    return out


def test_sentences_english_and_chinese():
    text = 'He said "Stop." Then he left!\nNew line here. 3.14 is pi? Yes  \n\n  '
    assert sentences(text) == ['He said "Stop."', "Then he left!", "New line here.", "3.14 is pi?", "Yes"]
    zh = "你好。我很好!“真的？”是的；好……再见\n下一行"
    assert sentences(zh, "zh") == ["你好。", "我很好!", "“真的？”", "是的；", "好……", "再见", "下一行"]
    assert split_sentences("   ") == []


def test_split_by_document():
    docs = ["a" * 10] * 4 + ["b" * 60]
    assert split_by_document(docs, 0.5) == 4  # the cut between documents nearest to 50 characters
    assert split_by_document(docs, 0.9) == 1  # at least one document trains
    with pytest.raises(LmforgeError, match="single document"):
        split_by_document(["only one"], 0.1)
    with pytest.raises(LmforgeError, match="val_fraction"):
        split_by_document(docs, 1.5)


def test_wordpiece_words_are_token_runs_without_hashes():
    texts = ["The phil harmonic played well? Bravo, players! philosophy harmony ones."] * 5
    tok = train_wordpiece(texts, 80)
    split = encode_split(tok, ["The philharmonic played. Bravo!", "Well?\nOnes play."], "en")
    assert split.tokens.dtype == np.int32 and split.word_ids.dtype == np.int32
    assert split.sent_offsets.tolist()[-1] == len(split.tokens) and split.sent_doc.tolist() == [0, 0, 1, 1]
    assert groups(split, tok) == ["the", "philharmonic", "played", ".", "bravo", "!", "well", "?", "ones", "play", "."]
    assert len(split.tokens) > 11  # 'philharmonic' (never seen whole) really is several pieces
    assert (np.diff(split.word_ids) >= 0).all()


def test_other_tokenizers_map_words_by_character_offsets():
    tok = train_bpe(["hello, world! hello worlds. " * 20], 300)
    split = encode_split(tok, ["hello, world! Hello worlds."], "en", method="pre-tokens")
    words = [tok.decode(split.tokens[split.word_ids == w]).strip() for w in np.unique(split.word_ids)]
    assert words == ["hello", ",", "world", "!", "Hello", "worlds", "."]
    tokens_only = encode_split(tok, ["hello, world!"], "en", method="tokens")
    assert tokens_only.word_ids.tolist() == list(range(len(tokens_only.tokens)))


ZH_WORDS = [["迈向", "充满", "希望", "的", "新", "世纪", "。"], ["中国", "人民", "站", "起来", "了", "！"],
            ["我们", "热爱", "和平", "。", "和平", "需要", "努力", "。"]]


def segmented_corpus(n=30):
    words = [ws + [str(i), "。"] for i in range(n) for ws in ZH_WORDS]  # distinct documents: nothing deduped
    return Corpus("seg", ["".join(ws) for ws in words], language="zh", words=words)


def test_corpus_words_are_kept(monkeypatch):
    corpus = segmented_corpus()
    monkeypatch.setattr(encoder, "load_corpus", lambda spec, column=None: corpus)
    data = prepare_encoder(DataConfig(corpus="seg", tokenizer="wordpiece", vocab_size=200, val_fraction=0.1),
                           log=lambda m: None)
    assert data.meta["words"] == "corpus"
    tok, split = data.tokenizer, data.train
    first_doc = groups(split, tok, 0, split.sent_offsets[split.doc_offsets[1]])
    assert first_doc == ZH_WORDS[0] + ["0", "。"]
    assert split.n_documents + data.val.n_documents == len(corpus.documents)
    assert split.sent_doc.tolist()[:3] == [0, 0, 1]  # '迈向…。' and '0。', then '中国人民站起来了!'
    # NFKC turned '！' into '!' while cleaning: the words follow.
    assert "!" in groups(split, tok) and "！" not in groups(split, tok)


def test_jieba_segments_chinese_text(tmp_path):
    pytest.importorskip("jieba")
    f = tmp_path / "zh.jsonl"
    rows = [f"第{i}天，中华人民共和国的人民热爱和平。我们需要努力工作！" for i in range(40)]
    f.write_text("\n".join(json.dumps({"text": r}, ensure_ascii=False) for r in rows))
    logs = []
    data = prepare_encoder(DataConfig(corpus=str(f), tokenizer="wordpiece", vocab_size=200, val_fraction=0.1),
                           log=logs.append, whole_word=True)
    assert data.meta["words"] == "jieba" and data.meta["language"] == "zh"
    words = groups(data.train, data.tokenizer)
    assert "人民" in words and "和平" in words and "努力" in words
    assert data.meta["train_words"] < data.meta["train_tokens"]


def test_without_jieba(tmp_path, monkeypatch):
    monkeypatch.setattr(encoder, "_jieba", lambda: None)
    f = tmp_path / "zh.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"第{i}天，人民热爱和平。"}, ensure_ascii=False) for i in range(20)))
    cfg = DataConfig(corpus=str(f), tokenizer="wordpiece", vocab_size=200)
    with pytest.raises(LmforgeError, match=r'pip install "lmforge\[chinese\]"') as info:
        prepare_encoder(cfg, log=lambda m: None, whole_word=True)
    assert "\n" not in str(info.value)
    logs = []
    data = prepare_encoder(cfg, log=logs.append)  # not insisting: one character per word, and a note
    assert data.meta["words"] == "pre-tokens" and any("jieba is not installed" in m for m in logs)
    assert all(len(w) == 1 or w.isdigit() for w in groups(data.train, data.tokenizer))  # '1 ##5' is one word


def test_split_is_by_document_and_one_file_is_cut_at_blank_lines(tmp_path):
    f = tmp_path / "book.txt"
    paragraphs = [f"Paragraph {i} starts here. It has words, {i} of them!\nA second line." for i in range(20)]
    f.write_text("\n\n".join(paragraphs))
    data = prepare_encoder(DataConfig(corpus=str(f), tokenizer="wordpiece", vocab_size=150, val_fraction=0.2),
                           log=lambda m: None)
    tok, train, val = data.tokenizer, data.train, data.val
    assert (train.n_documents, val.n_documents) == (16, 4)
    assert train.n_sentences == 16 * 3 and data.meta["words"] == "pre-tokens"
    assert val.sentence(0).tolist() == tok.encode("Paragraph 16 starts here.")
    for split in (train, val):
        assert (np.diff(split.sent_doc) >= 0).all() and set(np.diff(split.sent_doc)) <= {0, 1}
        assert split.doc_offsets[-1] == split.n_sentences


def test_end_to_end_batches_and_masks(tmp_path):
    f = tmp_path / "docs.jsonl"
    docs = [f"Story {i}. The cat sat on mat number {i}. Then it ran away! The end." for i in range(30)]
    f.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    data = prepare_encoder(DataConfig(corpus=str(f), tokenizer="wordpiece", vocab_size=150), log=lambda m: None)
    tok = data.tokenizer
    batch = PairBatches(data.train, 8, 32, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id, seed=0).next()
    inputs, labels = mask_tokens(batch["input_ids"], mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                                 special_ids=tok.special_ids, word_ids=batch["word_ids"],
                                 generator=torch.Generator().manual_seed(0))
    special = torch.isin(batch["input_ids"], torch.tensor(sorted(tok.special_ids)))
    assert (labels[special] == IGNORE).all() and inputs.shape == (8, 32)
    assert (batch["word_ids"][special] == -1).all() and (batch["word_ids"][~special] >= 0).all()


@pytest.mark.network
def test_peoples_daily_for_real(monkeypatch):
    monkeypatch.delenv("LMFORGE_OFFLINE", raising=False)
    try:
        data = prepare_encoder(DataConfig(corpus="peoples-daily", tokenizer="wordpiece", vocab_size=8192,
                                          val_fraction=0.05), log=lambda m: None)
    except LmforgeError as e:
        pytest.skip(f"no network: {e}")
    assert data.meta["words"] == "corpus" and data.meta["train_sentences"] > 40_000
    assert data.meta["train_words"] < 0.7 * data.meta["train_tokens"]  # words of ~1.6 characters
