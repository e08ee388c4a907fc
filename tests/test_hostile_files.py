"""Faults a user can cause with files: weights that are not finite, a config.json that does not match
its weights, symlinks planted in a run directory, a full disk, and three processes filling one cache.
Each ends in one sentence (exit 2 on the command line) and leaves nothing half-written."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError

from lmforge import checkpoint as ckpt
from lmforge.cli import main
from lmforge.config import ModelConfig, load_recipe
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.tokenizer import train_char

ROOT = Path(__file__).resolve().parents[1]
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def tiny():
    cfg = ModelConfig(vocab_size=20, context_length=8, n_layer=1, n_head=2, d_model=8)
    return build_model(cfg), train_char(["abcdefg"])


def text_file(tmp_path, chars=40_000) -> Path:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "runs", "away", "home"]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8 + i % 5)) for i in range(chars // 40)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and "\n" not in err and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


# --- weights -------------------------------------------------------------------------------------------
def test_resume_refuses_weights_that_are_not_finite(tmp_path):
    model, tok = tiny()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    ckpt.save_checkpoint(tmp_path, model, tok, trainer_state={"x": torch.tensor(1)}, step=3)
    with pytest.raises(LmforgeError, match="not finite numbers.*without --resume") as info:
        ckpt.load_trainer_state(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change", [{"n_layer": 10**6}, {"vocab_size": 2 * 10**9}, {"d_ff": 10**8},
                                    {"context_length": 10**7}, {"n_head": 4, "n_kv_head": 1}])
def test_a_config_that_does_not_match_its_weights_is_refused_before_allocating(tmp_path, monkeypatch, change):
    """Shapes come from the safetensors header and a model built on the meta device: nothing of the
    size config.json asks for is ever allocated."""
    model, tok = tiny()
    ckpt.save_checkpoint(tmp_path, model, tok, step=1)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    real = ckpt.build_model

    def only_on_meta(c):
        if torch.empty(0).device.type != "meta":
            raise AssertionError("a model was allocated before its shapes were checked")
        return real(c)

    monkeypatch.setattr(ckpt, "build_model", only_on_meta)
    start = time.perf_counter()
    with pytest.raises(LmforgeError) as info:
        ckpt.load_checkpoint(tmp_path)
    assert time.perf_counter() - start < 5 and "\n" not in str(info.value)


def test_a_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    model, tok = tiny()
    ckpt.save_checkpoint(tmp_path, model, tok, step=1)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "d_ff": 64}))
    with pytest.raises(LmforgeError, match=r"does not match config.json \(.blocks.0.mlp.fc.bias. is \(32,\) there, \(64,\) in the model"):
        ckpt.load_checkpoint(tmp_path)


# --- symlinks planted in a run directory ------------------------------------------------------------------
def test_a_run_never_writes_through_a_symlink_planted_in_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    names = ("metrics.jsonl", "loss.png", "model.safetensors", "config.json", "tokenizer.json", "recipe.yaml",
             "trainer_state.pt", "trainer_state.prev.pt")
    for name in names:
        (tmp_path / f"victim-{name}").write_text("keep me")
        (run / name).symlink_to(tmp_path / f"victim-{name}")
    recipe = {"model": {"preset": "gpt-micro", "context_length": 16, "n_layer": 1},
              "data": {"corpus": str(text_file(tmp_path, 20_000)), "tokenizer": "char"},
              "train": {"batch_size": 4, "max_steps": 4, "eval_every": 2, "eval_batches": 1, "progress": False,
                        "log_every": 1}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    from lmforge.train.pretrain import pretrainer

    pretrainer(load_recipe(str(tmp_path / "recipe.yaml")), run, log=lambda *a: None).fit()
    assert all((tmp_path / f"victim-{name}").read_text() == "keep me" for name in names)
    assert not any((run / name).is_symlink() for name in names if (run / name).exists())
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 4


def test_reports_go_through_the_atomic_writer(tmp_path):
    from lmforge import io
    from lmforge.train import finetune

    assert finetune.write_json is io.write_json
    (tmp_path / "victim").write_text("keep me")
    (tmp_path / "report.json").symlink_to(tmp_path / "victim")
    io.write_json(tmp_path / "report.json", {"accuracy": 1.0})
    assert (tmp_path / "victim").read_text() == "keep me"


# --- a full disk ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [FULL, SafetensorError("Error while serializing: I/O error: No space left on "
                                                           "device (os error 28)")])
def test_a_full_disk_while_saving_keeps_the_last_checkpoint_whole(tmp_path, monkeypatch, failure):
    model, tok = tiny()
    ckpt.save_checkpoint(tmp_path, model, tok, trainer_state={"x": torch.tensor(1)}, step=1)
    before = snapshot(tmp_path)

    def full(*a, **k):
        raise failure

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(LmforgeError, match="No space left on device; free some space") as info:
        ckpt.save_checkpoint(tmp_path, model, tok, trainer_state={"x": torch.tensor(2)}, step=2)
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path) == before  # not one file changed, no temporary file left
    assert ckpt.load_trainer_state(tmp_path)["step"] == 1


def _disk_fills_at_fsync(monkeypatch):
    """The disk is found full when the written data is flushed (where delayed allocation reports it)."""
    real = os.fsync

    def fsync(fd):
        if os.path.isfile(f"/proc/self/fd/{fd}"):
            raise FULL
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_in_data_prepare_is_one_line_and_caches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    corpus = text_file(tmp_path)
    _disk_fills_at_fsync(monkeypatch)
    assert main(["data", "prepare", str(corpus), "--tokenizer", "char", "--json"]) == 2
    one_line_error(capsys, "No space left on device", "free some space")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_full_disk_in_tokenizer_train_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    corpus, out = text_file(tmp_path), tmp_path / "out"
    out.mkdir()
    _disk_fills_at_fsync(monkeypatch)
    assert main(["tokenizer", "train", str(corpus), "--kind", "char", "--out", str(out)]) == 2
    one_line_error(capsys, str(out / "tokenizer.json"), "No space left on device")
    assert list(out.iterdir()) == []


# --- three writers of one cache --------------------------------------------------------------------------------
# `lmforge data prepare ...` with every rename of a folder slowed down, so that the three processes are
# sure to race: each has built its folder before any of them has renamed one into place.
SLOW_FOLDER_RENAMES = """
import os, sys, time
def slowed(real):
    def rename(src, dst, *a, **k):
        if os.path.isdir(src):
            time.sleep(2)
        return real(src, dst, *a, **k)
    return rename
os.rename, os.replace = slowed(os.rename), slowed(os.replace)
from lmforge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_three_data_prepares_of_one_file_at_once_all_succeed(tmp_path):
    corpus = text_file(tmp_path, 400_000)
    env = {**os.environ, "LMFORGE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", SLOW_FOLDER_RENAMES, "data", "prepare", str(corpus), "--vocab-size", "300", "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0, 0], [r[1][-500:] for r in results]
    assert results[0][0] == results[1][0] == results[2][0] and json.loads(results[0][0])["train_tokens"] > 0
    for kind in ("shards", "tokenizers"):  # one folder each, no temporary folder left behind
        assert len(list((tmp_path / "cache" / kind).iterdir())) == 1
