"""Weights checked against a config before anything is allocated.

A config names sizes; a safetensors file's header names the shapes it holds. Building the model on
PyTorch's meta device (shapes, no storage) and comparing its state dict with the header refuses a
config.json that disagrees with its weights (or a hostile one that asks for 10^6 layers) in one
sentence, before a real tensor exists. Lmforge run directories and Hugging Face ones both use it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.io import safetensors_header
from lmforge.models.registry import build_model


class MetaOps(TorchFunctionMode):
    """Meta-device work without the operations whose meta versions PyTorch writes in Python (their first
    use in a process imports its compiler: seconds): normal_ is skipped (a meta tensor has no values to
    fill), cat of meta tensors is worked out here, and arange yields one position, on the CPU. arange
    only builds position tables (RoPE, sinusoidal), which are not weights: they stay out of the state
    dict, whose shapes are all a check reads (test_hostile_configs checks a saved run of every family)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.nn.init.normal_, torch.Tensor.normal_):
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        if func is torch.arange:
            return func(*args, **{**kwargs, "device": "cpu"})[:1]
        if func is torch.cat:
            tensors = args[0] if args else kwargs.get("tensors")
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if tensors and all(isinstance(t, torch.Tensor) and t.is_meta for t in tensors):
                return _meta_cat(list(tensors), dim)
        return func(*args, **kwargs)


def _meta_cat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torch.cat's result shape (all sizes equal but along `dim`, where they add up), as a meta tensor."""
    first = tensors[0].shape
    if not first or any(len(t.shape) != len(first) for t in tensors):
        raise RuntimeError(f"cannot stack tensors of shapes {[list(t.shape) for t in tensors]}")
    dim %= len(first)
    if any(t.shape[k] != first[k] for t in tensors for k in range(len(first)) if k != dim):
        raise RuntimeError(f"cannot stack tensors of shapes {[list(t.shape) for t in tensors]} along dimension {dim}")
    size = [*first[:dim], sum(t.shape[dim] for t in tensors), *first[dim + 1:]]
    return torch.empty(size, dtype=tensors[0].dtype, device="meta")


def meta_model(cfg: ModelConfig) -> nn.Module:
    """The model `cfg` describes, with its weights' shapes but no storage (see MetaOps)."""
    with torch.device("meta"), MetaOps():
        return build_model(cfg)


LAYER = re.compile(r"(^|\.)blocks\.0\.")  # a parameter of the first layer of a stack


def expected_shapes(cfg: ModelConfig) -> tuple[dict[str, tuple[int, ...]], list[list[str]]]:
    """Every state-dict name of the model `cfg` describes -> its shape, and the names that share one tensor
    (tied embeddings). Built on the meta device with one layer per stack, whose names are repeated for
    each of the stack's layers (blocks.0. -> blocks.{i}.; an encoder-decoder's decoder.blocks. has
    n_decoder_layer of them): constructing thousands of layers, even without storage, takes seconds,
    and a config.json may ask for thousands."""
    one = meta_model(dataclasses.replace(cfg, n_layer=1, n_decoder_layer=1, quantization=_first_layer(cfg.quantization)))
    one = one.state_dict(keep_vars=True)
    shapes: dict[str, tuple[int, ...]] = {}
    groups: dict[tuple[int, int], list[str]] = {}
    for name, t in one.items():
        m = LAYER.search(name)
        head, tail = (name[:m.end() - 2], name[m.end():]) if m else (name, None)  # "...blocks.", "attn.qkv.weight"
        layers = cfg.n_decoder_layer if cfg.family == "seq2seq" and head == "decoder.blocks." else cfg.n_layer
        shape = tuple(t.shape)
        for i in range(layers if m else 1):
            full = name if tail is None else f"{head}{i}.{tail}"
            shapes[full] = shape
            groups.setdefault((id(t), i), []).append(full)
    return shapes, list(groups.values())


def _first_layer(spec: dict | None) -> dict | None:
    """A quantisation spec for the one-layer model: each layer's names read as the first layer's (lmforge
    quantize treats every layer of a stack alike)."""
    if not spec:
        return spec
    names = dict.fromkeys(re.sub(r"(^|\.)blocks\.\d+\.", r"\1blocks.0.", n) for n in spec["modules"])
    return {**spec, "modules": list(names)}


def _shape(x) -> tuple[int, ...]:
    """A shape from a tensor, a header entry ({"shape": [...]}) or a sequence of sizes."""
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    return tuple(x["shape"] if isinstance(x, Mapping) else x)


def check_weight_shapes(cfg: ModelConfig, found: Mapping[str, object], where: str,
                        may_lack: Iterable[str] = ()) -> None:
    """Every tensor in `found` (name -> tensor, header entry or shape, e.g. `io.safetensors_header`'s
    table) is one of the model's that `cfg` describes, with its shape, and every one of the model's is
    there, except names that start with a prefix in `may_lack` (parts that keep their fresh
    initialisation). Tied parameters (one tensor under two names) need only one of their names.
    `where` names the weights' file or directory. Nothing is allocated."""
    expected, groups = expected_shapes(cfg)
    for name, value in found.items():
        if name not in expected:
            raise LmforgeError(f"{where} holds a tensor {name} that the model its config.json describes does not "
                               "have; fix config.json or save the model again")
        have, want = _shape(value), expected[name]
        if have != want:
            raise LmforgeError(f"{where} does not match config.json ({name!r} is {have} there, {want} in the model "
                               "of config.json); restore the two files from one run, or save the model again")
    may_lack = tuple(may_lack) or ("\0",)
    for names in groups:
        if not any(n in found for n in names) and not names[0].startswith(may_lack):
            raise LmforgeError(f"{where} has no tensor {names[0]}; it is incomplete or not the model its config.json "
                               "describes")


def check_checkpoint(cfg: ModelConfig, weights: str | Path) -> None:
    """An lmforge run's model.safetensors against its config, from the header alone."""
    check_weight_shapes(cfg, safetensors_header(weights), str(weights))
