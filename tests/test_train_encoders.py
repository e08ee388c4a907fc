"""Pretraining encoders for real on a little text: BERT (MLM + NSP, whole-word masking in Chinese) and
ELECTRA learn, and a killed BERT run resumes to exactly the weights of an uninterrupted one."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmforge.config import load_recipe
from lmforge.train.pretrain import pretrainer
from tests.test_train import kill_then_resume


def write_recipe(tmp_path, corpus, preset="bert-mini", **train):
    recipe = {
        "model": {"preset": preset, "context_length": 48, "n_layer": 2, "d_model": 64, "n_head": 4, "dropout": 0.0},
        "data": {"corpus": str(corpus), "tokenizer": "wordpiece", "vocab_size": 600, "val_fraction": 0.1},
        "train": {"batch_size": 16, "max_steps": 120, "eval_every": 120, "eval_batches": 4, "warmup_steps": 10,
                  "lr": 2e-3, "progress": False, "log_every": 10, **train},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def fit(tmp_path, corpus, preset="bert-mini", **train):
    recipe = load_recipe(str(write_recipe(tmp_path, corpus, preset, **train)))
    return pretrainer(recipe, tmp_path / "run", log=lambda *a: None).fit()


def test_bert_mlm_and_nsp_learn(tmp_path, small_corpus):
    result = fit(tmp_path, small_corpus)
    first, last = result.evals[0], result.evals[-1]
    assert first["step"] == 0 and last["step"] == 120
    assert last["mlm_loss"] < first["mlm_loss"] - 0.5
    assert last["mlm_accuracy"] > first["mlm_accuracy"] + 0.03
    assert 0.3 < first["nsp_accuracy"] < 0.7  # a coin before training
    assert {"mlm_accuracy", "nsp_accuracy", "mlm_perplexity"} <= set(last)


def test_electra_discriminator_learns(tmp_path, small_corpus):
    result = fit(tmp_path, small_corpus, preset="electra-mini", objective="rtd")
    first, last = result.evals[0], result.evals[-1]
    # In this budget the discriminator learns the base rate (most tokens are original: loss from ln 2
    # to about H(0.15)) and the generator learns unigram statistics; finding the replacements takes longer.
    assert last["rtd_loss"] < first["rtd_loss"] - 0.1 and last["mlm_loss"] < first["mlm_loss"] - 0.3
    assert last["rtd_accuracy"] > 0.8 and 0.0 <= last["replaced_recall"] <= 1.0


def test_chinese_whole_word_masking_trains(tmp_path):
    words = ["人民", "日报", "中国", "经济", "发展", "改革", "开放", "社会", "主义", "建设", "北京", "上海"]
    g = torch.Generator().manual_seed(0)
    lines = ["".join(words[i] for i in torch.randint(0, len(words), (12,), generator=g).tolist()) + "。"
             for _ in range(400)]
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n\n".join(lines), encoding="utf-8")
    pytest.importorskip("jieba")
    result = fit(tmp_path, corpus, objective="mlm", whole_word_mask=True, max_steps=80, eval_every=80)
    assert result.evals[-1]["mlm_loss"] < result.evals[0]["mlm_loss"] - 1.0


def test_killed_bert_run_resumes_bit_exact(tmp_path, small_corpus):
    recipe = write_recipe(tmp_path, small_corpus, max_steps=100, eval_every=20, dtype="float32")  # bit for bit
    full, killed, stopped_at = kill_then_resume(recipe, tmp_path, 40)
    assert 40 <= stopped_at < 100, "the run was not killed part-way"
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_validation_split_too_small_for_nsp_is_refused_before_training(tmp_path, capsys):
    """12 documents, 5% for validation: one document, from which NSP cannot draw a random B."""
    import csv

    from lmforge.cli import main

    corpus = tmp_path / "zh.csv"
    with corpus.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["评论"])
        for i in range(12):
            w.writerow([f"这家店的菜很好吃。服务也不错{i}。下次还会再来。价格有点贵。"])
    out = tmp_path / "p"
    code = main(["train", "--recipe", "bert-pretrain", "--set", f"data.corpus={corpus}", "--set", "data.column=评论",
                 "--set", "model.context_length=64", "--set", "data.vocab_size=200", "--set", "data.val_fraction=0.05",
                 "--out", str(out)])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1, captured.err
    assert "needs at least two documents in the validation split" in err[0] and "data.val_fraction" in err[0]
    assert "training" not in captured.out and not out.exists()
