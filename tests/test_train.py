"""Training for real on a little Shakespeare: the loss falls, kill-and-resume is bit-exact, NaN stops cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmforge.config import load_recipe
from lmforge.errors import LmforgeError
from lmforge import checkpoint as ckpt
from lmforge.train.pretrain import pretrainer


def write_recipe(tmp_path, corpus, **train):
    recipe = {
        "model": {"preset": "gpt-micro", "context_length": 32, "dropout": 0.1},
        "data": {"corpus": str(corpus), "tokenizer": "char"},
        "train": {"batch_size": 8, "max_steps": 60, "eval_every": 20, "eval_batches": 2, "warmup_steps": 5,
                  "lr": 3e-3, "progress": False, "log_every": 5, **train},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_loss_falls_on_real_text(tmp_path, small_corpus):
    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus, max_steps=150, eval_every=150, eval_batches=8)))
    recipe.data.tokenizer, recipe.data.vocab_size = "bpe", 512
    result = pretrainer(recipe, tmp_path / "run", log=lambda *a: None).fit()
    first, last = result.evals[0], result.evals[-1]
    assert first["step"] == 0 and last["step"] == 150
    assert first["perplexity"] > 400  # untrained: close to uniform over 512 tokens
    assert last["loss"] < first["loss"] - 1.0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(rows[1])
    assert any("val_bits_per_byte" in r for r in rows)
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "trainer_state.pt"):
        assert (tmp_path / "run" / name).is_file()


def lmforge(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "lmforge.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy(), **kw)


def kill_then_resume(recipe, tmp_path, at_least: int) -> tuple:
    """Train `recipe` straight through, and again killed (SIGKILL) once a checkpoint of step `at_least` or
    later is on disk, then resumed: the two run directories and the step the killed run stopped at."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = lmforge("train", "--recipe", str(recipe), "--out", str(full))
    assert p.wait(timeout=300) == 0, p.stderr.read()
    p = lmforge("train", "--recipe", str(recipe), "--out", str(killed))
    deadline = time.time() + 300
    while time.time() < deadline:
        # a save moves trainer_state.pt in before model.safetensors: wait for both
        if ckpt.is_checkpoint(killed) and (killed / "trainer_state.pt").exists() \
                and ckpt.checkpoint_step(killed) >= at_least:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    stopped_at = ckpt.checkpoint_step(killed)
    p = lmforge("train", "--out", str(killed), "--resume")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return full, killed, stopped_at


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, small_corpus):
    recipe = write_recipe(tmp_path, small_corpus, max_steps=400, eval_every=25, dtype="float32")  # bit for bit
    full, killed, stopped_at = kill_then_resume(recipe, tmp_path, 50)
    assert 50 <= stopped_at < 400, "the run was not killed part-way"
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    sa = torch.load(full / "trainer_state.pt", weights_only=True)["optimizer"]["state"]
    sb = torch.load(killed / "trainer_state.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    steps = [json.loads(r)["step"] for r in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metrics of the killed run after its checkpoint were not dropped"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, small_corpus, monkeypatch):
    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus)))
    trainer = pretrainer(recipe, tmp_path / "run", log=lambda *a: None)
    real = trainer.task.loss
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        loss = real(model, batch)
        return loss * float("nan") if calls["n"] > 30 else loss

    monkeypatch.setattr(trainer.task, "loss", poisoned)
    with pytest.raises(LmforgeError, match=r"became nan at step 31.*\(step 20\) is kept"):
        trainer.fit()
    model, _ = ckpt.load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert ckpt.checkpoint_step(tmp_path / "run") == 20


def test_time_limit_stops_evaluates_and_saves(tmp_path, small_corpus):
    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus, max_steps=100000, time_limit_minutes=0.002)))
    result = pretrainer(recipe, tmp_path / "run", log=lambda *a: None).fit()
    assert result.stopped_early and 0 < result.steps < 100000
    assert result.evals[-1]["step"] == result.steps == ckpt.checkpoint_step(tmp_path / "run")


def fake_clock(monkeypatch, trainer, seconds) -> None:
    """The trainer reads a clock that only its loss calls advance, by seconds(n) at the n-th call: a
    time-limit test then does not depend on this machine's speed or on what else runs on it."""
    import types

    from lmforge.train import trainer as trainer_module

    real, calls, now = trainer.task.loss, [], [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def timed(model, batch):
        calls.append(1)
        now[0] += seconds(len(calls))
        return real(model, batch)

    trainer.task.loss = timed


def test_time_limit_measures_again_after_a_slow_start(tmp_path, small_corpus, monkeypatch):
    """Steps slowed by another program at the start shorten the schedule; the speed measured again at
    the next evaluation gives the steps back, so the run is not cut to what a busy minute allowed."""
    import re

    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus, max_steps=120, eval_every=10,
                                          time_limit_minutes=0.08)))  # 4.8 s of the fake clock
    said = []
    trainer = pretrainer(recipe, tmp_path / "run", log=said.append)
    fake_clock(monkeypatch, trainer, lambda n: 0.1 if n <= 20 else 0.01)
    result = trainer.fit()
    ends = [int(m) for m in re.findall(r"speed, (\d+) of 120", " ".join(said))]
    assert len(ends) >= 2 and ends[0] < 60 < ends[-1], said  # shortened, then lengthened
    assert result.steps == ends[-1] > 60


def test_a_slowdown_mid_run_shortens_the_schedule_so_it_still_anneals(tmp_path, small_corpus, monkeypatch):
    """Steps that become slow after a fast start, with no evaluation to measure them again: the speed
    is measured every 5% of the limit, so the schedule (warmup included) ends in time and the
    learning rate reaches its floor instead of being cut off at its peak."""
    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus, max_steps=100000, eval_every=100000,
                                          warmup_steps=2000, time_limit_minutes=0.1, log_every=1)))
    trainer = pretrainer(recipe, tmp_path / "run", log=lambda *a: None)
    fake_clock(monkeypatch, trainer, lambda n: 0.01 if n <= 30 else 0.04)
    result = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert result.steps == trainer.horizon < 100000  # the schedule's end, not the limit, ended the run
    assert lrs[-1] < 0.1 * max(lrs)  # annealed to near its floor (lr 3e-3, min_lr 1e-4) after a shortened warmup


def test_a_run_ended_by_its_time_limit_can_be_continued(tmp_path, small_corpus):
    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus, max_steps=100000, time_limit_minutes=0.01)))
    first = pretrainer(recipe, tmp_path / "run", log=lambda *a: None).fit()
    assert first.stopped_early and first.steps < 100000
    recipe.train.time_limit_minutes, recipe.train.max_steps = 0, first.steps + 10
    again = pretrainer(recipe, tmp_path / "run", resume=True, log=lambda *a: None).fit()
    assert again.steps == first.steps + 10


def test_killed_between_state_and_weights_still_resumes(tmp_path, monkeypatch):
    """A save stopped after the new trainer state but before the new weights leaves a resumable run."""
    from lmforge.config import ModelConfig
    from lmforge.models import build_model
    from lmforge.tokenizer import train_char

    model, tok = build_model(ModelConfig(vocab_size=20, context_length=8, n_layer=1, n_head=2, d_model=8)), train_char(["ab"])
    ckpt.save_checkpoint(tmp_path, model, tok, trainer_state={"x": torch.tensor(1)}, step=1)
    real = ckpt.os.replace

    def dies_at_the_weights(src, dst):
        if str(dst).endswith("model.safetensors"):
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dies_at_the_weights)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, model, tok, trainer_state={"x": torch.tensor(2)}, step=2)
    monkeypatch.undo()
    assert ckpt.checkpoint_step(tmp_path) == 1
    state = ckpt.load_trainer_state(tmp_path)
    assert state["step"] == 1 and int(state["x"]) == 1


def test_compiled_training_follows_eager_training(tmp_path, small_corpus):
    """train.compile=true runs the steps through torch.compile (the first step compiles, timed
    apart); without dropout the losses follow the eager run's to float32 rounding."""
    from torch._dynamo.utils import counters

    runs, graphs = {}, counters["stats"]["unique_graphs"]
    for setting in (True, False):
        (tmp_path / str(setting)).mkdir()
        path = write_recipe(tmp_path / str(setting), small_corpus, max_steps=30, eval_every=30, compile=setting,
                            dtype="float32")  # compared to float32 rounding
        recipe = load_recipe(str(path), ["model.dropout=0"])
        trainer = pretrainer(recipe, tmp_path / str(setting) / "run", log=lambda *a: None)
        assert (trainer.compiled is not None) == setting
        runs[setting] = trainer.fit()
    assert counters["stats"]["unique_graphs"] > graphs  # something was compiled
    on, off = runs[True], runs[False]
    assert on.compiled and on.compile_seconds > 0 and not off.compiled and off.compile_seconds == 0
    assert on.evals[-1]["loss"] < on.evals[0]["loss"] - 0.5
    assert abs(on.evals[-1]["loss"] - off.evals[-1]["loss"]) < 1e-3


def test_compile_failure_goes_on_without_it(tmp_path, small_corpus, monkeypatch):
    """With no working C++ compiler (the CPU backend needs one) the first step fails to compile:
    one line says so, and the same step is taken again eagerly, so the run equals an eager one."""
    import torch._inductor.config as inductor

    # inductor's own patch(): monkeypatch's undo deletes fx_graph_cache from its config module, and every later
    # compile in the process then fails
    no_compiler = inductor.patch({"cpp.cxx": (str(tmp_path / "no-such-c++"),), "fx_graph_cache": False})
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    said, losses = [], {}
    with no_compiler:
        for setting in (True, False):
            (tmp_path / str(setting)).mkdir()
            recipe = load_recipe(str(write_recipe(tmp_path / str(setting), small_corpus, max_steps=10, eval_every=10,
                                                  compile=setting)),
                                 # a shape no other test compiles: kernels built earlier in this process are reused
                                 ["model.dropout=0", "model.n_layer=1", "model.d_model=44", "model.n_head=4"])
            result = pretrainer(recipe, tmp_path / str(setting) / "run", log=said.append).fit()
            assert not result.compiled
            losses[setting] = [json.loads(r)["loss"] for r in (tmp_path / str(setting) / "run" / "metrics.jsonl")
                               .read_text().splitlines() if '"loss"' in r and "val_" not in r]
    failed = [s for s in said if "torch.compile failed here" in s]
    assert len(failed) == 1 and "InvalidCxxCompiler" in failed[0] and "train.compile=false" in failed[0], said
    assert losses[True] == losses[False]


def test_compile_setting_is_checked(tmp_path, small_corpus):
    for given, kept in (("auto", "auto"), ("on", True), ("false", False), (1, True)):
        assert load_recipe(str(write_recipe(tmp_path, small_corpus)), [f"train.compile={given}"]).train.compile == kept
    with pytest.raises(LmforgeError, match=r"train.compile='sometimes' is not supported; use auto, true or false"):
        load_recipe(str(write_recipe(tmp_path, small_corpus)), ["train.compile=sometimes"])
    from lmforge.train.parallel import should_compile

    assert should_compile("auto", torch.device("cuda")) and not should_compile("auto", torch.device("cpu"))
    assert should_compile(True, torch.device("cpu")) and not should_compile(False, torch.device("cuda"))


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_directory(tmp_path, small_corpus):
    recipe = load_recipe(str(write_recipe(tmp_path, small_corpus)))
    trainer = pretrainer(recipe, tmp_path / "run", log=lambda *a: None)

    def broken(*args, **kwargs):
        raise LmforgeError("the validation split cannot be scored")

    trainer.task.evaluate = broken
    with pytest.raises(LmforgeError, match="cannot be scored"):
        trainer.fit()
    assert not (tmp_path / "run").exists()
