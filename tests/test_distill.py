"""Distillation: the loss by hand at T = 1 and T = 2, a GPT student and a classifier student trained
from their teachers through the CLI, the control, and every bad input."""

import json
import math

import pytest
import torch

from lmforge.cli import main
from lmforge.objectives.distill import distill_loss, soft_loss
from tests.servers import tiny_run

TEACHER, STUDENT = [2.0, 1.0, 0.0], [0.5, 1.0, 0.0]


def softmax(z, t):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_the_soft_loss_is_t_squared_times_the_kl_divergence_by_hand(t):
    p, q = softmax(TEACHER, t), softmax(STUDENT, t)
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = soft_loss(torch.tensor([STUDENT]), torch.tensor([TEACHER]), t)
    assert got.item() == pytest.approx(t * t * kl, rel=1e-6)
    hard = -math.log(softmax(STUDENT, 1.0)[0])  # the label is answer 0
    both = distill_loss(torch.tensor([STUDENT]), torch.tensor([TEACHER]), torch.tensor([0]), t, alpha=0.25)
    assert both.item() == pytest.approx(0.25 * t * t * kl + 0.75 * hard, rel=1e-6)


def test_a_student_that_matches_its_teacher_has_no_soft_loss_and_ignored_positions_count_nowhere():
    z = torch.randn(2, 5, 7)
    assert soft_loss(z, z, 2.0).abs().max() < 1e-6
    targets = torch.randint(0, 7, (2, 5))
    targets[1] = -100
    other = torch.randn(2, 5, 7)
    other[1] = 50  # wild logits where nothing is asked
    a = distill_loss(z, other, targets, 2.0, 0.5)
    b = distill_loss(z[:1], other[:1], targets[:1], 2.0, 0.5)
    assert torch.allclose(a, b)


def test_a_gpt_student_learns_from_its_teacher(pretrained, tmp_path, capsys):
    capsys.readouterr()
    common = ["--teacher", str(pretrained), "--student-preset", "gpt-micro", "--set", "model.d_model=32",
              "--set", "train.max_steps=40", "--set", "train.eval_every=40", "--json"]
    assert main(["distill", *common, "--out", str(tmp_path / "taught")]) == 0
    taught = json.loads(capsys.readouterr().out)
    assert taught["kind"] == "language model" and taught["student_parameters"] < taught["teacher_parameters"]
    assert taught["validation"]["perplexity"] < 20  # a character model of 20 symbols that learned something
    assert main(["generate", str(tmp_path / "taught"), "the cat", "--max-new-tokens", "5"]) == 0


def test_a_classifier_student_learns_the_teachers_classes(fine_tuned_classifier, tmp_path, capsys):
    teacher, _ = fine_tuned_classifier
    capsys.readouterr()
    assert main(["distill", "--teacher", str(teacher), "--student-preset", "bert-mini", "--set", "model.n_layer=1",
                 "--set", "model.d_model=32", "--set", "model.n_head=2", "--set", "model.context_length=48",
                 "--set", "task.epochs=20",
                 "--out", str(tmp_path / "s"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["kind"] == "classifier" and r["student_parameters"] < r["teacher_parameters"]
    assert r["test"]["accuracy"] >= 0.75
    assert main(["predict", str(tmp_path / "s"), "--file", str(fine_tuned_classifier[1])]) == 0


def test_a_student_with_another_tokenizer_is_refused(pretrained, tmp_path, capsys):
    other = tiny_run(tmp_path / "other", ["a wholly different text with its own words"] * 10)
    assert main(["distill", "--teacher", str(pretrained), "--student-preset", str(other),
                 "--out", str(tmp_path / "s")]) == 2
    assert "the vocabularies must match" in capsys.readouterr().err and not (tmp_path / "s").exists()


@pytest.mark.parametrize("flags,says", [
    (["--temperature", "0"], "--temperature 0.0 must be above 0"),
    (["--alpha", "1.5"], "--alpha 1.5 must be between 0"),
    (["--student-preset", "gpt-huge"], "is neither a preset"),
])
def test_bad_settings_say_one_sentence_and_write_nothing(pretrained, tmp_path, capsys, flags, says):
    args = {"--student-preset": "gpt-micro", **dict(zip(flags[::2], flags[1::2]))}
    assert main(["distill", "--teacher", str(pretrained), *[x for kv in args.items() for x in kv],
                 "--out", str(tmp_path / "s")]) == 2
    assert says in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_a_teacher_without_a_recipe_is_refused(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", ["the cat sat on the mat"] * 10)
    assert main(["distill", "--teacher", str(run), "--student-preset", "gpt-micro", "--out", str(tmp_path / "s")]) == 2
    assert "has no recipe.yaml naming its data" in capsys.readouterr().err and not (tmp_path / "s").exists()
