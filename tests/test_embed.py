"""Word embeddings (lmforge/embed/): skip-gram's formulas against hand values and autograd, training
that finds which words share contexts (PyTorch and gensim), vectors from a model's embeddings,
queries, pictures, the file format, and bad input."""

import importlib.util
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.cli import main
from lmforge.embed import Word2VecConfig, WordVectors, corpus_words, from_model, train_word2vec
from lmforge.embed.plot import pca_2d
from lmforge.embed.word2vec import (SkipGram, keep_probabilities, noise_distribution, noise_table, vocabulary,
                                    window_pairs)
from lmforge.errors import LmforgeError

ANIMALS = "cat dog horse cow sheep goat".split()
FRUITS = "apple pear plum grape peach cherry".split()


def two_topics(n=3000, seed=0) -> list[list[str]]:
    """Sentences about animals or about fruit: words of one topic share their contexts."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        if i % 2:
            docs.append(["the", rng.choice(ANIMALS), "eats", "grass", "and", "the", rng.choice(ANIMALS), "runs"])
        else:
            docs.append(["a", "ripe", rng.choice(FRUITS), "is", "sweet", "like", "a", rng.choice(FRUITS)])
    return docs


def test_subsampling_keeps_rare_words_and_drops_frequent_ones():
    """P(keep) = min(1, (sqrt(f / t) + 1) t / f): f = 0.1, t = 1e-3 -> (10 + 1) / 100 = 0.11."""
    counts = np.array([100_000, 900_000])
    p = keep_probabilities(counts, 1e-3)
    assert p[0] == pytest.approx(0.11)
    f = 0.9
    assert p[1] == pytest.approx((math.sqrt(f / 1e-3) + 1) * 1e-3 / f)
    assert keep_probabilities(np.array([1, 999_999]), 1e-3)[0] == 1.0  # a rare word is always kept
    assert keep_probabilities(counts, 0).tolist() == [1.0, 1.0]


def test_noise_is_the_unigram_distribution_to_the_three_quarters():
    counts = np.array([16, 1])
    p = noise_distribution(counts)
    assert p[0] == pytest.approx(8 / 9) and p[1] == pytest.approx(1 / 9)  # 16^0.75 = 8
    table = noise_table(counts, size=900)
    assert (table == 0).sum().item() == 800 and (table == 1).sum().item() == 100


def test_window_pairs_stay_in_their_document_and_reach():
    ids = np.array([0, 1, 2, 3, 4])
    doc = np.array([0, 0, 0, 1, 1])
    pairs = {tuple(p) for p in window_pairs(ids, doc, 1, np.random.default_rng(0)).tolist()}
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)}  # never (2, 3): another document
    wide = window_pairs(ids, doc, 2, np.random.default_rng(0)).tolist()
    assert all(abs(a - b) <= 2 and doc[a] == doc[b] for a, b in wide) and (1, 0) in map(tuple, wide)


def test_the_hand_written_gradients_are_autograds():
    torch.manual_seed(0)
    sg = SkipGram(7, 4)
    sg.u.normal_()
    centre, context, noise = torch.tensor([0, 3, 0]), torch.tensor([1, 2, 5]), torch.tensor([[4, 6], [1, 1], [2, 3]])
    v, u = sg.v.clone().requires_grad_(), sg.u.clone().requires_grad_()
    loss = -(F.logsigmoid((u[context] * v[centre]).sum(-1))
             + F.logsigmoid(-torch.bmm(u[noise], v[centre].unsqueeze(-1)).squeeze(-1)).sum(-1)).sum()
    loss.backward()
    before_v, before_u = sg.v.clone(), sg.u.clone()
    got = sg.step(centre, context, noise, lr=0.1)
    assert got == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(sg.v, before_v - 0.1 * v.grad)
    torch.testing.assert_close(sg.u, before_u - 0.1 * u.grad)
    assert sg.loss(centre, context, noise).sum().item() < loss.item()  # the step lowered the loss


def topic_accuracy(words, vectors) -> float:
    """The share of topic words whose nearest other topic word (by cosine) is of the same topic."""
    wv = WordVectors(words, vectors)
    topic = ANIMALS + FRUITS
    right = 0
    for w in topic:
        others = [x for x in topic if x != w]
        nearest = max(others, key=lambda x: float(wv.vector(w) @ wv.vector(x)))
        right += (nearest in ANIMALS) == (w in ANIMALS)
    return right / len(topic)


def test_pytorch_word2vec_learns_which_words_share_contexts():
    words, vectors, report = train_word2vec(two_topics(), Word2VecConfig(dim=20, epochs=3, min_count=1,
                                                                          backend="torch"), log=lambda *a: None)
    assert report["backend"] == "torch" and report["loss_per_epoch"][-1] < report["loss_per_epoch"][0]
    assert topic_accuracy(words, vectors) == 1.0


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="gensim is not installed (the embed extra)")
def test_gensim_backend_gives_vectors_as_good_and_reads_our_file(tmp_path):
    docs = two_topics()
    words, vectors, report = train_word2vec(docs, Word2VecConfig(dim=20, epochs=3, min_count=1), log=lambda *a: None)
    assert report["backend"] == "gensim" and topic_accuracy(words, vectors) == 1.0
    from gensim.models import KeyedVectors

    WordVectors(words, vectors).save(tmp_path, report)
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "vectors.txt"))
    assert kv.index_to_key == words and np.allclose(kv["cat"], vectors[words.index("cat")], atol=1e-5)


def test_analogy_and_similarity_on_hand_made_vectors(tmp_path):
    """king - man + woman = queen when gender and royalty are two directions."""
    words = ["king", "queen", "man", "woman", "apple"]
    vectors = np.array([[1, 1, 0], [1, -1, 0], [0, 1, 0.1], [0, -1, 0.1], [0, 0, 1]], dtype=np.float32)
    wv = WordVectors(words, vectors)
    assert wv.analogy("man", "king", "woman")[0][0] == "queen"
    assert wv.similar("King", 1)[0][0] in {"man", "queen"}  # a capitalised query finds the lower-case word
    cos = float(vectors[0] @ vectors[2] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[2]))
    assert dict(wv.similar("king", 4))["man"] == pytest.approx(cos, abs=1e-4)
    wv.save(tmp_path / "v", {"method": "hand"})
    back = WordVectors.load(tmp_path / "v")
    assert back.words == words and np.allclose(back.vectors, vectors)
    with pytest.raises(LmforgeError, match="not among the 5 words"):
        wv.similar("banana")


def test_pca_finds_the_direction_of_most_variance():
    x = np.array([[0, 0, 0], [10, 0, 1], [20, 0, 0], [30, 0, 1]], dtype=float)
    xy = pca_2d(x)
    assert np.allclose(np.abs(xy[:, 0]), np.abs(x[:, 0] - 15), atol=0.1)  # the first axis is the spread-out one


def test_model_vectors_are_the_tokens_input_embeddings(tmp_path):
    from lmforge.checkpoint import save_checkpoint
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model
    from lmforge.tokenizer import train_wordpiece

    docs = [" ".join(d) for d in two_topics(200)]
    tok = train_wordpiece(docs, 200)
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=16, n_layer=1, d_model=16,
                                   n_head=2)
    model = build_model(cfg)
    save_checkpoint(tmp_path / "run", model, tok)
    words, vectors = from_model(tmp_path / "run", corpus_words(docs))
    assert set(ANIMALS) <= set(words)
    ids = [i for i in tok.encode("cat") if i not in tok.special_ids]
    table = model.embeddings.tok.weight.detach()
    assert np.allclose(vectors[words.index("cat")], table[ids].mean(0).numpy(), atol=1e-6)


def test_chinese_words_come_from_jieba():
    assert corpus_words(["我们喜欢学习自然语言处理。"])[0][:2] == ["我们", "喜欢"]
    assert corpus_words(["Don't stop, it's 2026!"]) == [["don't", "stop", "it's", "2026"]]


def test_cli_trains_queries_and_draws(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(" ".join(d) for d in two_topics(1500)), encoding="utf-8")
    out = tmp_path / "vec"
    assert main(["embed", "train", str(corpus), "--out", str(out), "--dim", "16", "--epochs", "2", "--min-count", "1",
                 "--backend", "torch", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["words"] == len(set(ANIMALS + FRUITS)) + 10 and (out / "vectors.txt").is_file()
    assert json.loads((out / "report.json").read_text())["method"] == "word2vec"
    assert main(["embed", "similar", str(out), "cat", "apple", "--k", "3", "--json"]) == 0
    near = json.loads(capsys.readouterr().out)["similar"]
    assert [(x["word"], x["cosine"]) for x in near["cat"]] == WordVectors.load(out).similar("cat", 3)
    assert main(["embed", "analogy", str(out), "cat", "dog", "apple", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["answers"]) == 5
    png = tmp_path / "w.png"
    assert main(["embed", "plot", str(out), "--words", ",".join(ANIMALS + FRUITS), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--window", "5"], "fewer than the 11"),
    (["--min-count", "50", "--window", "1"], "only 0 word(s) occur --min-count 50"),
    (["--method", "model"], "give the run with --run"),
    (["--epochs", "0"], "--epochs 0 cannot be used"),
])
def test_bad_training_input_is_one_sentence(tmp_path, capsys, args, message):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat", encoding="utf-8")
    assert main(["embed", "train", str(corpus), "--out", str(tmp_path / "v"), "--min-count", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "v").exists()


def test_bad_queries_are_one_sentence(tmp_path, capsys):
    WordVectors(["a", "b", "c"], np.eye(3)).save(tmp_path / "v", {})
    assert main(["embed", "similar", str(tmp_path / "v"), "zebra"]) == 2
    assert "not among the 3 words" in capsys.readouterr().err
    assert main(["embed", "plot", str(tmp_path / "v"), "--words", "a,b"]) == 2
    assert "at least 3 words" in capsys.readouterr().err
    (tmp_path / "junk.txt").write_text("not vectors")
    assert main(["embed", "similar", str(tmp_path / "junk.txt"), "a"]) == 2
    assert "is not word vectors" in capsys.readouterr().err


def test_chinese_words_are_drawn(tmp_path, recwarn):
    from lmforge.embed.plot import plot_words

    words = ["北京", "上海", "苹果", "香蕉"]
    wv = WordVectors(words, np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.2]]))
    png = plot_words(wv, words, tmp_path / "zh.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not [w for w in recwarn if "Glyph" in str(w.message)]  # one warning at most (no CJK font), not per glyph


def test_the_doc_shows_what_the_code_does():
    from pathlib import Path

    doc = " ".join((Path(__file__).resolve().parents[1] / "docs" / "data-preparation.md").read_text().split())
    sg = SkipGram(4, 3)
    sg.v[0] = torch.tensor([0.5, -0.2, 0.1])
    sg.u[1:] = torch.tensor([[0.4, 0.1, -0.3], [-0.3, 0.2, 0.5], [0.1, -0.4, 0.2]])
    parts = [-F.logsigmoid(x).item() for x in (sg.u[1] @ sg.v[0], -(sg.u[2] @ sg.v[0]), -(sg.u[3] @ sg.v[0]))]
    loss = sg.loss(torch.tensor([0]), torch.tensor([1]), torch.tensor([[2, 3]])).item()
    assert f"{sum(parts):.4f}" == f"{loss:.4f}" == "2.0175"
    assert "= 0.6210 + 0.6256 + 0.7710 = 2.0175" in doc
    assert [f"{p:.4f}" for p in parts] == ["0.6210", "0.6256", "0.7710"]
    reach1 = window_pairs(np.arange(6), np.zeros(6, dtype=int), 1, np.random.default_rng(0)).tolist()
    assert {tuple(p) for p in reach1 if p[0] == 2} == {(2, 1), (2, 3)}  # sat's pairs: cat and on
    assert f"{keep_probabilities(np.array([1, 9]), 1e-3)[0]:.2f}" == "0.11" and "0.11 for a word that is a tenth" in doc
