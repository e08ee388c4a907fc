"""Faults a user can cause in training: each ends in one sentence (exit 2 on the command line) and
loses nothing that was saved."""

import hashlib
import os
import shutil

import pytest
import torch
import yaml

from lmforge.config import load_recipe
from lmforge.errors import Diverged
from lmforge.io import RunLock
from lmforge import checkpoint as ckpt
from lmforge.train.pretrain import pretrainer
from tests.test_cli import assert_clear_error, run
from tests.test_train import write_recipe


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_non_finite_gradients_with_a_finite_loss_never_reach_the_weights(tmp_path, small_corpus, grad_clip):
    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus, grad_clip=grad_clip)))
    trainer = pretrainer(recipe, tmp_path / "run", log=lambda *a: None)
    real, calls = trainer.task.loss, {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        loss = real(model, batch)
        if calls["n"] > 30:  # the loss stays finite; its gradient is not
            zero = next(model.parameters()).sum() * 0.0
            zero.register_hook(lambda g: g * float("nan"))
            loss = loss + zero
        return loss

    trainer.task.loss = poisoned
    with pytest.raises(Diverged, match=r"gradient norm became nan at step 31; the last good checkpoint \(step 20\)"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the step was refused
    assert all(torch.isfinite(v).all() for s in trainer.optimizer.state.values() for v in s.values())
    model, _ = ckpt.load_checkpoint(tmp_path / "run")
    assert ckpt.checkpoint_step(tmp_path / "run") == 20


def test_resume_refuses_non_finite_weights(trained_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    weights = load_file(run_dir / "model.safetensors")
    name = next(iter(weights))
    weights[name][0] = float("inf")
    save_file(weights, str(run_dir / "model.safetensors"), metadata={"format": "pt", "step": "30"})
    assert_clear_error(*run(capsys, "train", "--out", str(run_dir), "--resume")[::2], "not finite")


def test_a_run_directory_in_use_is_refused_naming_the_holder(trained_run, tmp_path, small_corpus, capsys):
    from tests.test_finetune import rows, write_csv

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = digest(run_dir / "model.safetensors")
    data = write_csv(tmp_path / "d.csv", rows(40))
    with RunLock(run_dir, "lmforge train"):  # another process's lock (a lock is per open file description)
        holder = f"pid {os.getpid()} (lmforge train)"
        assert_clear_error(*run(capsys, "train", "--out", str(run_dir), "--resume")[::2], "is in use by", holder)
        assert_clear_error(*run(capsys, "finetune", str(trained_run), "--data", str(data), "--out", str(run_dir),
                                "--resume")[::2], holder)
        assert_clear_error(*run(capsys, "quickstart", "--corpus", str(small_corpus), "--out", str(run_dir))[::2],
                           holder)
        with RunLock(tmp_path / "cv", "lmforge cv"):
            assert_clear_error(*run(capsys, "cv", str(trained_run), "--data", str(data), "--out",
                                    str(tmp_path / "cv"))[::2], "is in use by")
    assert digest(run_dir / "model.safetensors") == before


def test_resume_accepts_the_command_line_that_started_the_run(trained_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    same = ["--set", f"data.corpus={saved['data']['corpus']}", "--set", "model.context_length=32",
            "--set", "train.eval_batches=2", "--set", "train.eval_every=10"]
    code, _, err = run(capsys, "train", "--recipe", "shakespeare-char", "--out", str(run_dir), "--resume", *same,
                       "--set", "train.max_steps=32", "--json")
    assert code == 0, err
    assert ckpt.checkpoint_step(run_dir) == 32
    assert_clear_error(*run(capsys, "train", "--out", str(run_dir), "--resume", "--set", "model.context_length=64")[::2],
                       "--set model.context_length=64 would change the model or its data")


def test_quickstart_never_overwrites_a_trained_model(trained_run, tmp_path, small_corpus, capsys):
    run_dir = tmp_path / "qs"
    shutil.copytree(trained_run, run_dir)
    before = digest(run_dir / "model.safetensors")
    code, _, err = run(capsys, "quickstart", "--corpus", str(small_corpus), "--out", str(run_dir), "--json")
    assert_clear_error(code, err, "already holds a trained model", "another --out",
                       f"lmforge train --out {run_dir} --resume")
    assert digest(run_dir / "model.safetensors") == before
    code, _, err = run(capsys, "train", "--out", str(run_dir), "--resume", "--set", "train.max_steps=31", "--json")
    assert code == 0, err  # the fix the message names works
