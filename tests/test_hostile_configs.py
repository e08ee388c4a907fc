"""Faults a user can cause with a model directory's files: a config.json with absurd or inconsistent
values (lmforge's own form and Hugging Face's) is refused quickly, before anything large is
allocated, in one sentence naming the key; a shard index cannot point outside its directory or at a
FIFO; an export that cannot be written is one error and leaves nothing behind."""

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.api import LM, export_hf
from lmforge.config import ModelConfig, model_config_from_preset
from lmforge.errors import LmforgeError
from lmforge.models import build_model, hf
from lmforge.models.shapes import check_checkpoint
from lmforge.tokenizer import train_bpe
from lmforge.checkpoint import save_checkpoint

QUICK = 5.0  # seconds; each refusal below takes milliseconds when nothing large is built
TEXT = "The quick brown fox jumps over the lazy dog. A second sentence follows here. " * 20
SHAPES = {
    "gpt2": dict(activation="gelu_tanh"),
    "llama": dict(position="rope", norm="rmsnorm", activation="swiglu", n_kv_head=2, bias=False, tie_embeddings=False,
                  d_ff=96),
    "bert": dict(family="bert", causal=False, norm_position="post"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([TEXT], vocab_size=300)


def tiny(kind: str, vocab: int) -> torch.nn.Module:
    return build_model(ModelConfig(vocab_size=vocab, context_length=32, n_layer=2, n_head=4, d_model=64, **SHAPES[kind]))


@pytest.fixture(scope="module")
def exports(tokenizer, tmp_path_factory):
    """A Hugging Face directory of each mapped shape, written by lmforge's own export."""
    root = tmp_path_factory.mktemp("exports")
    return {kind: export_hf(LM(tiny(kind, tokenizer.vocab_size), tokenizer), root / kind) for kind in SHAPES}


def edited(source: Path, dest: Path, change: dict) -> Path:
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **change}))
    return dest


def refused_quickly(load, *words: str) -> str:
    start = time.perf_counter()
    with pytest.raises(LmforgeError) as e:
        load()
    assert time.perf_counter() - start < QUICK
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


# --- lmforge's own config.json -----------------------------------------------------------------------------
@pytest.mark.parametrize("change, words", [
    ({"n_layer": 10**6}, ["model.n_layer=1000000"]),
    ({"vocab_size": 2 * 10**9}, ["model.vocab_size=2000000000"]),
    ({"n_kv_head": 0}, ["model.n_kv_head=0"]),
    ({"d_ff": -1}, ["model.d_ff=-1"]),
    ({"rope_theta": 0}, ["model.rope_theta=0"]),
    ({"norm_eps": -1}, ["model.norm_eps=-1"]),
    ({"norm_eps": float("inf")}, ["model.norm_eps=inf"]),
    ({"n_layer": "2"}, ["model.n_layer='2'", "without quotes"]),
    ({"d_model": "64"}, ["model.d_model='64'"]),
    ({"dropout": "0.1"}, ["model.dropout='0.1'"]),
    ({"bias": "yes"}, ["model.bias='yes'"]),
    ({"n_layer": True}, ["model.n_layer=True"]),
    ({"n_layer": 4000, "d_model": 65536, "n_head": 4}, ["parameters"]),
])
def test_absurd_lmforge_configs_are_refused_quickly(change, words, tokenizer, tmp_path):
    save_checkpoint(tmp_path, tiny("gpt2", tokenizer.vocab_size), tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    refused_quickly(lambda: lmforge.load(tmp_path, device="cpu"), *words)


@pytest.mark.parametrize("change, words", [
    ({"n_layer": 3000}, ["no tensor blocks.2."]),  # plausible, but not what the file holds
    ({"d_model": 4096, "n_head": 32, "d_ff": 16384}, ["not match", "4096"]),
    ({"vocab_size": 2**24}, ["not match", "16777216"]),
])
def test_an_lmforge_config_at_odds_with_its_weights_is_refused_from_the_header(change, words, tokenizer, tmp_path):
    save_checkpoint(tmp_path, tiny("gpt2", tokenizer.vocab_size), tokenizer)
    cfg = ModelConfig.from_dict({**json.loads((tmp_path / "config.json").read_text()), **change})
    check_checkpoint(ModelConfig.load(tmp_path / "config.json"), tmp_path / "model.safetensors")  # as saved: fine
    refused_quickly(lambda: check_checkpoint(cfg, tmp_path / "model.safetensors"), *words)


@pytest.mark.parametrize("preset, change", [
    ("gpt-micro", {}), ("gpt-micro", {"position": "sinusoidal"}), ("gpt-micro", {"head": "qa"}), ("llama-mini", {}),
    ("bert-mini", {}), ("bert-mini", {"head": "classify", "labels": ["a", "b"]}), ("electra-mini", {}),
    ("t5-mini", {"n_decoder_layer": 2}), ("bart-mini", {"n_decoder_layer": 5}),
    ("transformer-base", {"n_layer": 2, "n_decoder_layer": 3, "d_model": 64, "d_ff": 128}),
])
def test_every_familys_saved_run_matches_its_config_from_the_header(preset, change, tokenizer, tmp_path):
    cfg = model_config_from_preset(preset, vocab_size=tokenizer.vocab_size, **change)
    save_checkpoint(tmp_path, build_model(cfg), tokenizer)
    check_checkpoint(cfg, tmp_path / "model.safetensors")


def test_shapes_are_checked_without_importing_the_compiler(exports, tmp_path):
    """PyTorch's Python meta kernels import torch._dynamo on first use: seconds of a one-second budget."""
    path = edited(exports["llama"], tmp_path / "llama", {"hidden_size": 8192, "num_attention_heads": 64,
                                                         "head_dim": 128, "intermediate_size": 28672})
    code = ("import sys; from lmforge.config import model_config_from_preset as p; "
            "from lmforge.models.shapes import expected_shapes as e; from lmforge.models import hf; "
            "[e(p(n)) for n in ('llama-1b', 'bert-base', 'electra-small')]; "
            "e(p('gpt-micro', position='sinusoidal'))\n"
            f"try: hf.load_hf({str(path)!r})\nexcept Exception as x: assert 'not match' in str(x), x\n"
            "assert 'torch._dynamo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --- Hugging Face config.json --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, change, words", [
    ("llama", {"num_hidden_layers": 10**6}, ["num_hidden_layers=1000000"]),
    ("llama", {"vocab_size": 2 * 10**9}, ["vocab_size=2000000000"]),
    ("llama", {"num_key_value_heads": 0}, ["num_key_value_heads=0"]),
    ("llama", {"intermediate_size": -1}, ["intermediate_size=-1"]),
    ("llama", {"rope_theta": 0, "rope_parameters": None}, ["rope_theta=0"]),
    ("llama", {"rms_norm_eps": -1}, ["rms_norm_eps=-1"]),
    ("llama", {"hidden_size": "64"}, ["hidden_size='64'"]),
    ("llama", {"max_position_embeddings": 1.5}, ["max_position_embeddings=1.5"]),
    ("gpt2", {"n_layer": 10**6}, ["n_layer=1000000"]),
    ("gpt2", {"n_embd": "64"}, ["n_embd='64'"]),
    ("gpt2", {"layer_norm_epsilon": -1}, ["layer_norm_epsilon=-1"]),
    ("gpt2", {"n_inner": -1}, ["n_inner=-1"]),
    ("bert", {"num_hidden_layers": 10**6}, ["num_hidden_layers=1000000"]),
    ("bert", {"type_vocab_size": 0}, ["type_vocab_size=0"]),
    ("bert", {"architectures": ["BertForSequenceClassification"], "id2label": None, "num_labels": 10**12},
     ["num_labels=1000000000000"]),
])
def test_absurd_hugging_face_configs_are_refused_quickly_naming_their_key(kind, change, words, exports, tmp_path):
    path = edited(exports[kind], tmp_path / kind, change)
    refused_quickly(lambda: hf.load_hf(path), *words)
    refused_quickly(lambda: lmforge.load(path, device="cpu"), *words)


@pytest.mark.parametrize("kind, change, words", [
    # a Llama-70B config over a tiny checkpoint: building it would take 280 GB
    ("llama", {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
               "num_key_value_heads": 8, "head_dim": 128}, ["no tensor model.layers.2."]),
    ("llama", {"hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64, "head_dim": 128},
     ["not match", "8192"]),
    ("llama", {"vocab_size": 2**24}, ["not match", "16777216"]),
    ("gpt2", {"n_positions": 2**20}, ["not match", "pos_emb.weight"]),
    ("bert", {"intermediate_size": 2**20}, ["not match", "mlp.fc.weight"]),
])
def test_a_hugging_face_config_at_odds_with_its_weights_is_refused_before_allocating(kind, change, words, exports,
                                                                                       tmp_path):
    path = edited(exports[kind], tmp_path / kind, change)
    refused_quickly(lambda: hf.load_hf(path), *words)


def test_tensor_shapes_that_cannot_be_stacked_are_one_error(exports, tmp_path):
    from safetensors.torch import load_file, save_file

    path = edited(exports["llama"], tmp_path / "llama", {})
    sd = load_file(str(path / "model.safetensors"))
    sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 3, 2)  # 3-D, where q|k|v rows are stacked
    save_file(sd, str(path / "model.safetensors"))
    refused_quickly(lambda: hf.load_hf(path), "not match")


# --- paths named inside a directory --------------------------------------------------------------------------
def sharded(source: Path, dest: Path, shard: str) -> Path:
    """A copy of `source` whose index names `shard` for every tensor."""
    path = edited(source, dest, {})
    names = hf.HFDir.read(path).weight_header()
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))
    return path


@pytest.mark.parametrize("shard, words", [("/etc/passwd", "not a relative path"), ("../x.safetensors", "outside"),
                                          ("sub/../../x.safetensors", "outside")])
def test_a_shard_index_cannot_name_a_file_outside_its_directory(shard, words, exports, tmp_path):
    shutil.copy(exports["gpt2"] / "model.safetensors", tmp_path / "x.safetensors")  # a real one, just outside
    path = sharded(exports["gpt2"], tmp_path / "hf", shard)
    refused_quickly(lambda: hf.load_hf(path), shard, words)


def test_a_shard_index_cannot_name_a_fifo(exports, tmp_path):
    path = sharded(exports["gpt2"], tmp_path / "hf", "shard.safetensors")
    os.mkfifo(path / "shard.safetensors")
    done = time.monotonic() + 10

    def unblock():  # were the FIFO opened for reading, end it (EOF) so that the test fails instead of hanging
        while time.monotonic() < done:
            try:
                os.close(os.open(path / "shard.safetensors", os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=unblock, daemon=True).start()
    refused_quickly(lambda: hf.load_hf(path), "shard.safetensors", "not a regular file")


def test_a_fifo_for_config_json_is_not_a_model_directory(tmp_path):
    os.mkfifo(tmp_path / "config.json")
    start = time.perf_counter()
    assert not hf.is_hf_dir(tmp_path)
    assert time.perf_counter() - start < QUICK


# --- exports that cannot be written --------------------------------------------------------------------------
def test_an_export_under_a_file_is_one_error_and_leaves_nothing(tokenizer, tmp_path):
    (tmp_path / "file").write_text("mine")
    lm = LM(tiny("llama", tokenizer.vocab_size), tokenizer)
    refused_quickly(lambda: export_hf(lm, tmp_path / "file" / "hf"), "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_a_full_disk_during_export_is_one_error_and_leaves_nothing(kind, tokenizer, tmp_path, monkeypatch):
    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # the part that fitted
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lmforge.models.hf.io.save_file", full)
    lm = LM(tiny(kind, tokenizer.vocab_size), tokenizer)
    refused_quickly(lambda: export_hf(lm, tmp_path / "hf"), "cannot write", "space")
    assert list(tmp_path.iterdir()) == []
