"""Checkpoints: a run directory is a model anyone can load, and a training run that can resume.

    config.json          the ModelConfig
    model.safetensors    the weights (no pickle), with the step in its metadata
    tokenizer.json       the tokenizer
    recipe.yaml          the full recipe of the run
    trainer_state.pt     optimizer, scheduler, RNG and data position (tensors only; loaded weights_only)

Every file is first written to a temporary folder in the run directory and then moved into place
with `os.replace`. The trainer state goes in before the weights, and the state it replaces is kept
as trainer_state.prev.pt: a run killed at any point while saving still has weights and a trainer
state of one step (`load_trainer_state` takes whichever state matches the weights), so it resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file
from tokenizers.models import BPE
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.tokenizer import Tokenizer

FILES = ("tokenizer.json", "config.json", "recipe.yaml", "trainer_state.pt", "model.safetensors")
STATES = ("trainer_state.pt", "trainer_state.prev.pt")  # the newest first


def save_checkpoint(run_dir: str | Path, model: nn.Module, tokenizer: Tokenizer, recipe=None,
                    trainer_state: dict | None = None, step: int = 0) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".checkpoint-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=run_dir))
    try:
        model.config.save(tmp / "config.json")
        tokenizer.hf.save(str(tmp / "tokenizer.json"))
        if recipe is not None:
            recipe.save(tmp / "recipe.yaml")
        tensors, shared = weights_to_save(model)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "step": str(step), **shared})
        if trainer_state is not None:
            torch.save({**trainer_state, "step": step}, tmp / "trainer_state.pt")
        umask = os.umask(0)
        os.umask(umask)
        for name in FILES:
            if name == "trainer_state.pt" and (tmp / name).exists() and (run_dir / name).exists():
                os.replace(run_dir / name, run_dir / STATES[1])  # the state that matches the weights still there
            if (tmp / name).exists():
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp / name, 0o666 & ~umask)  # temporary files are private; the run is not
                os.replace(tmp / name, run_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_to_save(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict as safetensors stores it: a tensor shared under several names (tied
    embeddings) once, under its first name, plus {other name: first name}; every tensor contiguous
    (decoding may have laid weights out column-major, see generate/fast_linear.py). `load_model`
    restores the shared names from the model it loads into."""
    tensors: dict[str, torch.Tensor] = {}
    shared: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if key in first and t.numel():
            shared[name] = first[key]
        else:
            first[key] = name
            tensors[name] = t.contiguous()
    return tensors, shared


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def checkpoint_step(path: str | Path) -> int:
    with safe_open(str(Path(path) / "model.safetensors"), framework="pt") as f:
        return int((f.metadata() or {}).get("step", 0))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Tokenizer]:
    """A run directory -> (model in eval mode, tokenizer). Every failure is one clear LmforgeError."""
    path = Path(path)
    if not path.exists():
        raise LmforgeError(f"{path} does not exist; give the directory of a run made by `lmforge train` or `lmforge quickstart`")
    if not is_checkpoint(path):
        raise LmforgeError(
            f"{path} is not an lmforge checkpoint (it needs config.json and model.safetensors); "
            "give the directory of a run made by `lmforge train` or `lmforge quickstart`, or a Hugging Face model directory"
        )
    try:
        cfg = ModelConfig.load(path / "config.json")
    except (ValueError, TypeError) as e:
        raise LmforgeError(f"{path / 'config.json'} is neither an lmforge model config nor a Hugging Face one ({e}); "
                           "restore the file from where the model came from") from None
    model = build_model(cfg)
    try:
        load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LmforgeError(
            f"{path / 'model.safetensors'} is truncated, corrupted or does not match config.json ({first[:200]}); "
            "restore it from a copy or retrain"
        ) from None
    if not all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point()):
        raise LmforgeError(f"{path / 'model.safetensors'} holds weights that are not finite numbers (damaged, or "
                           "saved from a diverged run); restore it from a copy or retrain")
    model.to(device).eval()
    return model, Tokenizer.load(path / "tokenizer.json")


def load_trainer_state(path: str | Path) -> dict:
    """The trainer state saved with the run's weights: trainer_state.pt, or the previous one when a run
    was killed between writing the new state and the new weights."""
    path = Path(path)
    found = [path / name for name in STATES if (path / name).is_file()]
    if not found:
        raise LmforgeError(f"{path} has no trainer_state.pt to resume from; start a new run without --resume")
    step = checkpoint_step(path)
    for f in found:
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several kinds on a damaged file
            raise LmforgeError(f"{f} is damaged ({type(e).__name__}); start a new run without --resume") from None
        if state.get("step") == step:
            return state
    raise LmforgeError(
        f"{path} holds weights and trainer state from different steps (the run was stopped while saving); "
        "start a new run without --resume"
    )


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Tokenizer]:
    """An lmforge run or a Hugging Face model directory -> (model in eval mode, tokenizer)."""
    from lmforge.models import hf

    path = Path(path)
    if not hf.is_hf_dir(path):
        return load_checkpoint(path, device)
    if not (path / "tokenizer.json").is_file():
        raise LmforgeError(f"{path} has no tokenizer.json, which lmforge needs to turn text into tokens; save the "
                           "tokenizer there (tokenizer.save_pretrained) or load the bare model with lmforge.models.hf.load_hf")
    model = hf.load_hf(path, device)
    tokenizer = Tokenizer.load(path / "tokenizer.json")
    tokenizer.hf.no_padding()  # a saved tokenizer.json may pad / cut every text to a fixed length (MiniLM: 128);
    tokenizer.hf.no_truncation()  # transformers drops both on load, and so does lmforge
    rules = hf.tokenizer_rules(path)
    if rules is not None and isinstance(tokenizer.hf.model, BPE):  # the tokenizer class sets its own text rules
        kind, settings = rules
        {"llama": tokenizer.use_llama_rules, "gpt2": tokenizer.use_gpt2_rules}[kind](**settings)
    for role, i in hf.special_ids_from_hf(path, tokenizer.hf.token_to_id).items():  # the model's own, not lmforge's
        if 0 <= i < model.config.vocab_size:
            setattr(tokenizer, f"{role}_id", i)
    return model.eval(), tokenizer


def write_json(path: str | Path, obj) -> None:
    """Write JSON through a temporary file and a rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_plain) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _plain(x):
    """numpy / torch scalars and arrays as plain JSON numbers and lists."""
    return x.tolist() if hasattr(x, "tolist") else str(x)
