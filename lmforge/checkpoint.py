"""Checkpoints: a run directory is a model anyone can load, and a training run that can resume.

    config.json          the ModelConfig
    model.safetensors    the weights (no pickle), with the step in its metadata
    tokenizer.json       the tokenizer
    recipe.yaml          the full recipe of the run
    trainer_state.pt     optimizer, scheduler, RNG and data position (tensors only; loaded weights_only)

A LoRA run (models/lora.py) saves its adapter instead of model.safetensors: adapter_model.safetensors
and adapter_config.json in PEFT's layout, read back onto the base model it names (adapters.py).

Every file goes through `lmforge.io.atomic_path` (temp file, fsync, rename, directory fsync; a
symlink planted in the run directory is replaced, never written through). All temporary files are
written before the first rename, so a full disk changes nothing. The trainer state is renamed in
before the weights, and the state it replaces is kept as trainer_state.prev.pt: a run killed at any
point while saving still has weights and a trainer state of one step (`load_trainer_state` takes
whichever state matches the weights), so it resumes.

Loading reads the safetensors header first and checks every shape against a model built on the
meta device (no memory), so a config.json with absurd sizes is refused before anything is allocated.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file
from tokenizers.models import BPE
from torch import nn

from lmforge.adapters import ADAPTER, ADAPTER_CONFIG, load_adapted
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.io import atomic_path, os_error
from lmforge.models import build_model
from lmforge.models.shapes import check_checkpoint
from lmforge.tokenizer import Tokenizer

FILES = ("model.safetensors", "adapter_model.safetensors", "trainer_state.pt", "recipe.yaml", "config.json",
         "tokenizer.json", "adapter_config.json")  # renamed last first
WEIGHTS = "model.safetensors"
STATES = ("trainer_state.pt", "trainer_state.prev.pt")  # the newest first
# What a run is besides its weights: its recipe (a task's columns and labels), a chat run's template and
# end-of-turn. A model made from a run (merged, quantised) keeps them; its training history stays behind.
SIDE_FILES = ("recipe.yaml", "tokenizer_config.json", "generation_config.json", "chat_template.jinja")


# --- writing -------------------------------------------------------------------------------------------
def save_checkpoint(run_dir: str | Path, model: nn.Module, tokenizer: Tokenizer, recipe=None,
                    trainer_state: dict | None = None, step: int = 0) -> None:
    run_dir = Path(run_dir)
    _remove_leftovers(run_dir)
    writers = {**_weight_writers(model, step),
               "trainer_state.pt": None if trainer_state is None else lambda p: _save_state({**trainer_state, "step": step}, p),
               "recipe.yaml": None if recipe is None else recipe.save,
               "config.json": model.config.save,
               "tokenizer.json": lambda p: p.write_text(tokenizer.to_json(), encoding="utf-8")}

    def keep_previous_state(failed, *_) -> None:  # runs just before the new state is renamed in
        if failed is None:
            _keep_previous_state(run_dir)

    with contextlib.ExitStack() as renames:  # leaving it renames every temp file in, the last entered first
        for name, write in writers.items():
            if write is not None:
                write(renames.enter_context(atomic_path(run_dir / name)))
            if write is not None and name == STATES[0]:
                renames.push(keep_previous_state)


def _weight_writers(model: nn.Module, step: int) -> dict:
    """The weights file: model.safetensors, or for a LoRA run the adapter alone (adapter_model.safetensors
    in PEFT's layout: its A and B, and what trained in full) and adapter_config.json."""
    meta = {"format": "pt", "step": str(step)}
    if getattr(model, "lora", None) is not None:
        import json

        from lmforge.models.hf.peft import adapter_config, to_peft
        from lmforge.models.lora import trained_tensors

        s = model.lora
        tensors = {k: v.contiguous() for k, v in to_peft(trained_tensors(model), model.config).items()}
        body = adapter_config(model.config, s.rank, s.alpha, s.dropout, s.base, tensors)
        return {ADAPTER: lambda p: save_weights(p, tensors, meta),
                ADAPTER_CONFIG: lambda p: p.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")}
    tensors, shared = weights_to_save(model)
    return {WEIGHTS: lambda p: save_weights(p, tensors, {**meta, **shared})}


def _keep_previous_state(run_dir: Path) -> None:
    """trainer_state.pt -> trainer_state.prev.pt: the state that matches the weights still in place."""
    try:
        if (run_dir / STATES[0]).exists():
            os.replace(run_dir / STATES[0], run_dir / STATES[1])
    except OSError as e:
        raise os_error(e, run_dir / STATES[1]) from None


def _remove_leftovers(run_dir: Path) -> None:
    """Temporary files of a save that was killed (SIGKILL, power cut): never trusted, never kept."""
    if not run_dir.is_dir():
        return
    for stale in run_dir.glob(".checkpoint-*"):  # the temporary folders of older lmforge versions
        shutil.rmtree(stale, ignore_errors=True)
    for name in (*FILES, STATES[1]):
        for stale in run_dir.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, with its I/O failures (a full disk) raised as the OSError they are."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        found = re.search(r"os error (\d+)", str(e))  # the Rust library words an I/O error this way
        code = int(found[1]) if found else errno.EIO
        raise OSError(code, os.strerror(code) if found else str(e), str(path)) from None


def _save_state(state: dict, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: torch reports a failed write as the OSError it is
        torch.save(state, f)


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


# --- reading -------------------------------------------------------------------------------------------
def weights_file(path: str | Path) -> Path:
    """A run's weights: model.safetensors, or a LoRA run's adapter_model.safetensors."""
    path = Path(path)
    return path / ADAPTER if (path / ADAPTER).is_file() and not (path / WEIGHTS).is_file() else path / WEIGHTS


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and weights_file(path).is_file()


def checkpoint_step(path: str | Path) -> int:
    weights = weights_file(path)
    try:
        with safe_open(str(weights), framework="pt") as f:
            return int((f.metadata() or {}).get("step", 0))
    except (SafetensorError, OSError, ValueError):
        raise LmforgeError(f"{weights} is truncated or corrupted; restore it from a copy or retrain") from None


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
    if weights_file(path).name == ADAPTER:
        return load_adapted(path, cfg, device, load_pretrained)
    check_checkpoint(cfg, path / "model.safetensors")  # shapes from the header, before allocating
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
        raise _not_finite(path / "model.safetensors", "restore it from a copy or retrain")
    model.to(device).eval()
    return model, Tokenizer.load(path / "tokenizer.json")


def _not_finite(weights: Path, fix: str) -> LmforgeError:
    return LmforgeError(f"{weights} holds weights that are not finite numbers (damaged, or saved from a diverged "
                        f"run); {fix}")


def check_finite(weights: Path, fix: str) -> None:
    """Refuse a weights file holding NaN or infinity, reading one tensor at a time."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if t.is_floating_point() and not torch.isfinite(t).all():
                    raise _not_finite(weights, fix)
    except (SafetensorError, OSError, ValueError):
        raise LmforgeError(f"{weights} is truncated or corrupted; {fix}") from None


def load_trainer_state(path: str | Path) -> dict:
    """The trainer state saved with the run's weights: trainer_state.pt, or the previous one when a run
    was killed between writing the new state and the new weights. Weights that are not finite are
    refused: resuming from them would train on NaN."""
    path = Path(path)
    found = [path / name for name in STATES if (path / name).is_file()]
    if not found or not is_checkpoint(path):
        raise LmforgeError(f"{path} has no checkpoint with a trainer_state.pt to resume from; start a new run "
                           "without --resume")
    check_finite(weights_file(path), "start a new run without --resume (with a lower train.lr if it diverged)")
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


def load_pretrained(path, device: str | torch.device = "cpu") -> tuple[nn.Module, Tokenizer]:
    """An lmforge run or a Hugging Face model directory (a path, or an `hf.HFDir` already read, so its
    files are parsed once) -> (model in eval mode, tokenizer)."""
    from lmforge.models import hf

    if not hf.is_hf_dir(path):
        return load_checkpoint(path.path if isinstance(path, hf.HFDir) else path, device)
    d = hf.as_dir(path)
    if not (d.path / "tokenizer.json").is_file():
        raise LmforgeError(f"{d.path} has no tokenizer.json, which lmforge needs to turn text into tokens; save the "
                           "tokenizer there (tokenizer.save_pretrained) or load the bare model with lmforge.models.hf.load_hf")
    model = hf.load_hf(d, device)
    tokenizer = Tokenizer.load(d.path / "tokenizer.json")  # without a saved padding / truncation (MiniLM: 128)
    rules = hf.tokenizer_rules(d)
    if rules is not None and isinstance(tokenizer.hf.model, BPE):  # the tokenizer class sets its own text rules
        kind, settings = rules
        {"llama": tokenizer.use_llama_rules, "gpt2": tokenizer.use_gpt2_rules}[kind](**settings)
    for role, i in hf.special_ids_from_hf(d, tokenizer.hf.token_to_id).items():  # the model's own, not lmforge's
        if 0 <= i < model.config.vocab_size:
            setattr(tokenizer, f"{role}_id", i)
    return model.eval(), tokenizer


def save_derived(run: str | Path, out: str | Path, model: nn.Module, tokenizer: Tokenizer) -> None:
    """Save `model`, made from the run in `run` (merged, quantised), as a run in `out` that keeps the
    source's SIDE_FILES: it predicts with the same columns and labels and chats with the same template."""
    copy_side_files(run, out)
    save_checkpoint(out, model, tokenizer)


def copy_side_files(run: str | Path, out: str | Path, skip: tuple[str, ...] = ()) -> None:
    """The run's SIDE_FILES (but `skip`) copied into `out`, each file whole or not at all."""
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if name not in skip and (run / name).is_file():
            with atomic_path(out / name) as tmp:
                shutil.copyfile(run / name, tmp)


def merge_run(run: str | Path, out: str | Path) -> dict:
    """`lmforge merge RUN --out OUT`: the LoRA run's adapters folded into its base's weights
    (W + (alpha / r) B A), saved as an ordinary run that needs no base model."""
    from lmforge.models.lora import adapted_layers, merge_lora

    run, out = Path(run), Path(out)
    if not (run / ADAPTER).is_file():
        raise LmforgeError(f"{run} holds no LoRA adapter ({ADAPTER}); give the directory of a run fine-tuned with "
                           "--lora-rank")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"{out} exists and is not empty; give a new directory for the merged model")
    model, tokenizer = load_checkpoint(run)
    layers = len(adapted_layers(model))
    merge_lora(model)
    save_derived(run, out, model, tokenizer)
    return {"run": str(run), "out": str(out), "merged_layers": layers,
            "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}
