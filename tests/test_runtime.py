"""Precision by measurement: train.dtype=auto, the cached bfloat16 probe, and what a run records of it."""

import json
import random

import pytest
import torch
import yaml

from lmforge import runtime
from lmforge.config import load_recipe
from lmforge.io import cache_dir

CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """A probe that answers `probe.speedup` and counts its calls, over an empty cache."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake(width=128):
        calls.append(width)
        return fake.speedup

    fake.speedup, fake.calls = 2.0, calls
    monkeypatch.setattr(runtime, "bf16_speedup", fake)
    return fake


def test_auto_follows_the_probe_on_cpu_and_bfloat16_on_cuda(probe, monkeypatch):
    dtype, why = runtime.choose_dtype(CPU, "auto")
    assert dtype == torch.bfloat16 and "2.00x" in why and "at least 1.3x" in why
    probe.speedup = 1.2
    monkeypatch.setattr(runtime, "cpu_model", lambda: "another CPU")  # a fresh cache key
    dtype, why = runtime.choose_dtype(CPU, "auto")
    assert dtype is None and "1.20x" in why and "under 1.3x" in why
    assert runtime.choose_dtype(torch.device("cuda"), "auto")[0] == torch.bfloat16
    assert runtime.choose_dtype(CPU, "float32") == (None, "train.dtype=float32")
    assert runtime.choose_dtype(CPU, "bfloat16") == (torch.bfloat16, "train.dtype=bfloat16")
    assert len(probe.calls) == 2  # a setting or CUDA never probes


def test_the_probe_runs_once_per_cpu_and_torch_and_a_damaged_cache_is_measured_again(probe):
    assert runtime.cached_bf16_speedup() == 2.0
    probe.speedup = 0.5  # a second probe would now say otherwise
    assert runtime.cached_bf16_speedup() == 2.0 and len(probe.calls) == 1
    [saved] = cache_dir("probes").glob("bf16-*.json")
    record = json.loads(saved.read_text())
    assert runtime.cpu_model() in record["key"] and torch.__version__ in record["key"]
    saved.write_text('{"key": ')  # cut short: a killed writer, or a full disk
    assert runtime.cached_bf16_speedup() == 0.5 and len(probe.calls) == 2
    assert json.loads(saved.read_text())["bf16_speedup"] == 0.5


def test_the_probe_measures_each_width_once_rounded_to_64(probe):
    assert runtime.choose_dtype(CPU, "auto", 384)[0] == torch.bfloat16
    probe.speedup = 1.1
    assert runtime.choose_dtype(CPU, "auto", 100)[0] is None  # 128: measured now, under 1.3x
    assert "128-wide" in runtime.choose_dtype(CPU, "auto", 128)[1]
    assert "384-wide" in runtime.choose_dtype(CPU, "auto", 330)[1]  # 384 was measured: read back, bfloat16
    assert runtime.choose_dtype(CPU, "auto", 330)[0] == torch.bfloat16
    assert runtime.choose_dtype(CPU, "auto", 8192)[0] is None  # wider than 1024 probes at 1024
    assert probe.calls == [384, 128, 1024]
    assert runtime.probe_width(1) == 64 and runtime.probe_width(64) == 64 and runtime.probe_width(65) == 128


def test_the_real_probe_measures_a_positive_ratio():
    assert 0 < runtime.bf16_speedup(batch=2, seq=8, width=16, repeats=2) < 1e4


@pytest.mark.parametrize("speedup, chosen", [(0.5, "float32"), (3.0, "bfloat16")])
def test_a_run_says_its_precision_first_and_records_it(probe, tmp_path, speedup, chosen):
    from lmforge.train.pretrain import pretrainer

    probe.speedup = speedup
    rng = random.Random(0)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(rng.choices("the king and queen of a far land".split(), k=12))
                                 for _ in range(400)), encoding="utf-8")
    recipe = {"model": {"preset": "gpt-micro", "context_length": 16}, "data": {"corpus": str(corpus),
              "tokenizer": "char"}, "train": {"batch_size": 4, "max_steps": 2, "eval_every": 2, "eval_batches": 1,
                                              "warmup_steps": 1, "progress": False}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    said = []
    result = pretrainer(load_recipe(str(tmp_path / "r.yaml")), tmp_path / "run", log=said.append).fit()
    first_line = next(s for s in said if s.startswith("precision:"))  # the trainer's first line
    assert first_line.startswith(f"precision: {chosen}") and f"{speedup:.2f}x" in first_line
    assert result.dtype == chosen and f"{speedup:.2f}x" in result.dtype_reason
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["dtype"] == chosen and first["dtype_reason"] == result.dtype_reason
