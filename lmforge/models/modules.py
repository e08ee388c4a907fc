"""A model's layers by name: the plain Linear a name points at, and putting another layer in its place.
LoRA (models/lora.py) and quantisation (models/quantized.py) both swap Linear layers this way."""

from __future__ import annotations

from torch import nn


def plain_linear(model: nn.Module, name: str) -> nn.Linear | None:
    """The nn.Linear (exactly: not a subclass or a wrapper) named `name` in `model`, or None."""
    try:
        m = model.get_submodule(name)
    except AttributeError:
        return None
    return m if type(m) is nn.Linear else None


def replace_module(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Put `layer` where the module named `name` is."""
    path, _, attr = name.rpartition(".")
    setattr(model.get_submodule(path) if path else model, attr, layer)
