"""LoRA runs: a run directory that holds an adapter (adapter_model.safetensors + adapter_config.json,
PEFT's layout) instead of full weights, read back onto the base model it was trained on.

The base is named by adapter_config.json's `base_model_name_or_path` (an lmforge run or a Hugging Face
directory, as given to `lmforge finetune`, made absolute). `lmforge.load(RUN)` and every command that
reads a run apply the adapter on the fly (models/lora.py; checkpoint.load_checkpoint calls
`load_adapted`); `lmforge merge RUN --out` folds it into the weights for good (checkpoint.merge_run).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models import build_model, grow_vocab
from lmforge.models.hf.peft import from_peft
from lmforge.models.lora import LoraSettings, add_lora, attach_adapter, base_prefix, load_trained, trainable_report
from lmforge.tokenizer import Tokenizer

ADAPTER, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
__all__ = ["ADAPTER", "ADAPTER_CONFIG", "adapt", "adapter_tensors", "load_adapted", "read_settings", "resume_adapter",
           "trainable_report"]


def read_settings(path: Path) -> LoraSettings:
    """adapter_config.json -> the adapter's rank, alpha, dropout and base."""
    where = path / ADAPTER_CONFIG
    try:
        body = json.loads(where.read_text(encoding="utf-8"))
        settings = LoraSettings(rank=int(body["r"]), alpha=float(body["lora_alpha"]),
                                dropout=float(body.get("lora_dropout") or 0.0), base=str(body["base_model_name_or_path"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LmforgeError(f"{where} is missing or damaged ({type(e).__name__}: {e}); a LoRA run needs it to know its "
                           "rank, alpha and base model: restore it from a copy") from None
    if body.get("peft_type", "LORA") != "LORA" or body.get("use_dora") or body.get("use_rslora"):
        raise LmforgeError(f"{where} describes a {body.get('peft_type')} adapter with DoRA / rsLoRA settings; lmforge "
                           "reads plain LoRA adapters")
    return settings


def adapter_tensors(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The run's adapter file under lmforge's names."""
    try:
        tensors = load_file(str(path / ADAPTER))
    except (SafetensorError, OSError, ValueError):
        raise LmforgeError(f"{path / ADAPTER} is truncated or corrupted; restore it from a copy or retrain") from None
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise LmforgeError(f"{path / ADAPTER} holds numbers that are not finite (a diverged run); retrain with a "
                           "lower learning rate")
    return from_peft(tensors, cfg)


def _base_of(settings: LoraSettings, path: Path, device, load_base) -> nn.Module:
    if not settings.base or not Path(settings.base).exists():
        raise LmforgeError(f"{path} is a LoRA adapter of the base model {settings.base!r}, which is not there; put "
                           "that model back at that path, or merge the adapter where it is (lmforge merge RUN --out)")
    base, _ = load_base(settings.base, device)
    return base


def load_adapted(path: Path, cfg: ModelConfig, device, load_base) -> tuple[nn.Module, Tokenizer]:
    """A LoRA run -> (its base model with the adapter on, in eval mode; the run's tokenizer).
    load_base(path, device) -> (model, tokenizer): checkpoint.load_pretrained."""
    settings = read_settings(path)
    tensors = adapter_tensors(path, cfg)
    base = _base_of(settings, path, device, load_base)
    if base_prefix(cfg):  # a task model: the base's weights under `base.`, the head from the adapter
        model = build_model(cfg)
        model.base.load_state_dict(base.state_dict())
    else:
        model = base
        if cfg.vocab_size > base.config.vocab_size:  # tokens the run added (a chat template's): rows in the adapter
            grow_vocab(model, cfg.vocab_size)
    attach_adapter(model, tensors, settings)
    return model.to(device).eval(), Tokenizer.load(path / "tokenizer.json")


def resume_adapter(model: nn.Module, run_dir: Path) -> None:
    """Resuming a LoRA run: its saved A, B (and head) into the model being trained."""
    load_trained(model, adapter_tensors(run_dir, model.config))


def adapt(model: nn.Module, task, log=print, train_also: tuple[str, ...] = ()) -> dict | None:
    """Put the recipe's LoRA adapters on a fine-tuning model (task.lora_rank > 0), its base frozen but
    for the parameters named from `train_also` (embeddings grown for new tokens); None when the task
    trains every weight. Logs and returns the trainable share."""
    if not task.lora_rank:
        return None
    base = Path(str(task.base or ""))
    if not base.exists():
        raise LmforgeError("LoRA adapts a pretrained model, and {setting} is a model built from scratch; drop "
                           "--lora-rank, or give a trained run or Hugging Face directory", "task.base", task.base)
    targets = tuple(x.strip() for x in task.lora_targets.split(",") if x.strip())
    settings = LoraSettings(task.lora_rank, task.lora_alpha, task.lora_dropout, targets, str(base.resolve()))
    report = add_lora(model, settings, base_prefix(model.config), train_also)
    log(f"LoRA rank {settings.rank} (alpha {settings.alpha:g}) on {report['layers']} layers: {report['trainable']:,} "
        f"of {report['total']:,} parameters train ({report['fraction']:.2%})")
    return report
