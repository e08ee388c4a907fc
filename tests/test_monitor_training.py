"""Watching training: TensorBoard event files read back with TensorBoard's own reader hold what
metrics.jsonl holds (one point a step, also across a resume), and `lmforge plot` draws runs' curves."""

import json
import math
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from lmforge.cli import build_parser
from lmforge.cli.tasks import fine_tuning_recipe
from lmforge.config import load_recipe
from lmforge.errors import LmforgeError
from lmforge.train.pretrain import pretrainer
from lmforge.train.tensorboard import tag_for
from tests.test_cli import assert_clear_error, run
from tests.test_train import write_recipe

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TOKENS_PER_STEP = 8 * 32  # write_recipe's batch_size x context_length


def events(run_dir):
    acc = event_accumulator.EventAccumulator(str(run_dir),
                                             size_guidance={"scalars": 0, "histograms": 0})
    return acc.Reload()


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(tmp_path, corpus, name, **settings):
    recipe = load_recipe(str(write_recipe(tmp_path, corpus, **settings)))
    return pretrainer(recipe, tmp_path / name, log=lambda *a: None)


def test_event_files_hold_the_logged_scalars_once_per_step_across_a_resume(tmp_path, small_corpus, monkeypatch):
    trainer = train(tmp_path, small_corpus, "run", tensorboard=True, histograms_every=10)
    real, calls = trainer.task.loss, {"n": 0}

    def dies_at_step_34(model, batch):  # the run stops at step 34 with its checkpoint at step 20
        calls["n"] += 1
        loss = real(model, batch)
        return loss * float("nan") if calls["n"] > 33 else loss

    monkeypatch.setattr(trainer.task, "loss", dies_at_step_34)
    with pytest.raises(LmforgeError, match="step 34"):
        trainer.fit()
    before = events(tmp_path / "run")
    assert before.Scalars("train/loss")[-1].step == 30  # the killed run's curve went past its checkpoint

    monkeypatch.undo()
    recipe = load_recipe(str(tmp_path / "run" / "recipe.yaml"))
    pretrainer(recipe, tmp_path / "run", resume=True, log=lambda *a: None).fit()
    acc, logged = events(tmp_path / "run"), rows(tmp_path / "run")
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/tokens", "val/loss",
            "val/perplexity"} <= set(tags)
    for tag in tags:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), f"{tag} has a step twice or out of order: {steps}"
    for key in ("loss", "lr", "grad_norm", "tokens", "val_loss", "val_perplexity"):
        expected = [(r["step"], r[key]) for r in logged if key in r]
        got = [(e.step, e.value) for e in acc.Scalars(tag_for(key))]
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert all(math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-9) for (_, g), (_, e) in zip(got, expected)), key
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(5, 61, 5))
    assert [e.step for e in acc.Scalars("val/loss")] == [0, 20, 40, 60]
    # the token count goes on from the checkpoint's: every step trained on batch_size x context tokens
    assert [(e.step, e.value) for e in acc.Scalars("train/tokens")] == [(s, s * TOKENS_PER_STEP) for s in range(5, 61, 5)]
    assert all(e.value > 0 for e in acc.Scalars("train/grad_norm"))
    histograms = acc.Tags()["histograms"]
    names = [name for name, _ in trainer.model.named_parameters()]
    assert sorted(histograms) == sorted([f"weights/{n}" for n in names] + [f"grads/{n}" for n in names])
    assert [e.step for e in acc.Histograms("grads/tok_emb.weight")] == [10, 20, 30, 40, 50, 60]
    h = acc.Histograms("weights/tok_emb.weight")[-1].histogram_value
    assert h.num > 0 and h.min <= h.max


def test_a_run_without_tensorboard_writes_no_event_files_but_logs_grad_norm_and_tokens(tmp_path, small_corpus):
    train(tmp_path, small_corpus, "plain", max_steps=10, eval_every=10).fit()
    assert not list((tmp_path / "plain").glob("events.out.tfevents.*"))
    row = next(r for r in rows(tmp_path / "plain") if "loss" in r)
    assert row["grad_norm"] > 0 and row["tokens"] == row["step"] * TOKENS_PER_STEP


def test_finetune_with_the_flag_writes_its_validation_metrics(tmp_path, capsys):
    from tests.conftest import classifier_base

    data = classifier_base(tmp_path)
    code, _, _ = run(capsys, "finetune", str(tmp_path / "base"), "--data", str(data), "--epochs", "2", "--lr", "3e-3",
                     "--tensorboard", "--out", str(tmp_path / "run"), "--json", "--set", "train.progress=false")
    assert code == 0
    acc, logged = events(tmp_path / "run"), rows(tmp_path / "run")
    for key in ("val_loss", "val_accuracy", "val_f1_macro", "loss", "grad_norm"):
        expected = [(r["step"], r[key]) for r in logged if key in r]
        got = [(e.step, e.value) for e in acc.Scalars(tag_for(key))]
        assert len(got) == len(expected) > 1 and all(
            s == t and math.isclose(g, e, rel_tol=1e-6) for (s, g), (t, e) in zip(got, expected)), key


def test_finetune_flag_and_setting_are_checked():
    args = build_parser().parse_args(["finetune", "base", "--data", "rows.csv", "--tensorboard"])
    assert fine_tuning_recipe(args).train.tensorboard is True
    args = build_parser().parse_args(["finetune", "base", "--data", "rows.csv"])
    assert fine_tuning_recipe(args).train.tensorboard is False
    args = build_parser().parse_args(["finetune", "base", "--data", "rows.csv", "--set", "train.histograms_every=-1"])
    with pytest.raises(LmforgeError, match="histograms_every"):
        fine_tuning_recipe(args)


def test_missing_tensorboard_is_one_clear_error_before_any_work(tmp_path, small_corpus, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(LmforgeError, match=r"lmforge\[monitor\]"):
        train(tmp_path, small_corpus, "run", tensorboard=True)
    assert not (tmp_path / "run").exists()


def test_plot_draws_each_runs_curve_against_steps_or_tokens(tmp_path, small_corpus, capsys):
    for name, lr in (("slow", 3e-4), ("fast", 3e-3)):
        (tmp_path / name).mkdir()
        train(tmp_path / name, small_corpus, "run", max_steps=20, eval_every=5, log_every=10, lr=lr).fit()
    runs = [str(tmp_path / "slow" / "run"), str(tmp_path / "fast" / "run")]
    out = tmp_path / "curves.png"
    code, stdout, _ = run(capsys, "plot", *runs, "--out", str(out), "--json")
    r = json.loads(stdout)
    assert code == 0 and r["metric"] == "val_loss" and r["x"] == "step" and r["out"] == str(out)
    for curve, run_dir in zip(r["runs"], runs):
        expected = [[row["step"], row["val_loss"]] for row in rows(Path(run_dir)) if "val_loss" in row]
        assert curve["run"] == run_dir and curve["points"] == expected and len(expected) == 5
    assert r["runs"][1]["points"][-1][1] < r["runs"][0]["points"][-1][1]  # the higher rate learns faster here
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (450, 800) and image[..., :3].std() > 0.05  # a drawn figure, not a blank one

    code, stdout, _ = run(capsys, "plot", runs[0], "--metric", "loss", "--x", "tokens", "--out", str(out), "--json")
    points = json.loads(stdout)["runs"][0]["points"]
    expected = [(row["step"], row["loss"]) for row in rows(Path(runs[0])) if "loss" in row]
    assert [p[0] for p in points] == [s * TOKENS_PER_STEP for s, _ in expected]
    # a validation row's token count sits between the training rows around it (logged every 10th step)
    code, stdout, _ = run(capsys, "plot", runs[0], "--x", "tokens", "--out", str(out), "--json")
    assert [p[0] for p in json.loads(stdout)["runs"][0]["points"]] == [s * TOKENS_PER_STEP for s in (0, 5, 10, 15, 20)]


def test_plot_refuses_what_it_cannot_draw_in_one_sentence(tmp_path, capsys):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"step": 0, "val_loss": 4.0}, {"step": 10, "loss": 3.0, "lr": 1e-3}, {"step": 10, "val_loss": 2.5})) + "\n")
    out = str(tmp_path / "c.png")
    code, _, err = run(capsys, "plot", str(run_dir), "--metric", "val_accuracy", "--out", out)
    assert_clear_error(code, err, "val_accuracy", "loss, lr, val_loss")
    code, _, err = run(capsys, "plot", str(run_dir), "--x", "tokens", "--out", out)
    assert_clear_error(code, err, "no token counts", "--x step")
    code, _, err = run(capsys, "plot", str(run_dir), "--out", str(tmp_path / "c.pdf"))
    assert_clear_error(code, err, "c.pdf", ".png")
    code, _, err = run(capsys, "plot", str(tmp_path / "nowhere"), "--out", out)
    assert_clear_error(code, err, "nowhere", "metrics.jsonl")
    code, stdout, _ = run(capsys, "plot", str(run_dir), "--out", out, "--json")
    assert code == 0 and json.loads(stdout)["runs"][0]["points"] == [[0, 4.0], [10, 2.5]]


def test_recipe_keys_round_trip(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"train": {"tensorboard": True, "histograms_every": 50}}))
    recipe = load_recipe(str(path))
    assert recipe.train.tensorboard is True and recipe.train.histograms_every == 50


def test_histograms_without_tensorboard_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"train": {"histograms_every": 50}}))
    with pytest.raises(LmforgeError, match=r"train.histograms_every=50 draws its histograms in TensorBoard"):
        load_recipe(str(path))


def test_a_run_resumed_from_its_first_checkpoint_logs_step_0_once(tmp_path, small_corpus, monkeypatch):
    trainer = train(tmp_path, small_corpus, "run", tensorboard=True, max_steps=20, eval_every=10)
    real = trainer.task.loss
    monkeypatch.setattr(trainer.task, "loss", lambda model, batch: real(model, batch) * float("nan"))
    with pytest.raises(LmforgeError, match="step 1"):  # dies at once: only the step-0 checkpoint is on disk
        trainer.fit()
    monkeypatch.undo()
    recipe = load_recipe(str(tmp_path / "run" / "recipe.yaml"))
    pretrainer(recipe, tmp_path / "run", resume=True, log=lambda *a: None).fit()
    assert [r["step"] for r in rows(tmp_path / "run") if "val_loss" in r] == [0, 10, 20]
    assert [e.step for e in events(tmp_path / "run").Scalars("val/loss")] == [0, 10, 20]


def test_a_resumed_writer_waits_for_a_later_second_than_the_earlier_files(tmp_path):
    import time

    from lmforge.train.tensorboard import after_earlier_files

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.host.example.99999.0").write_bytes(b"")
    after_earlier_files(tmp_path)  # its file's name must sort after that one (pids compare as text)
    assert int(time.time()) > now
    (tmp_path / f"events.out.tfevents.{now + 3600}.host.1.0").write_bytes(b"")  # a clock set back: no wait
    t = time.monotonic()
    after_earlier_files(tmp_path)
    assert time.monotonic() - t < 0.5
