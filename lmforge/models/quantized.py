"""Which Linear layers of a model are stored as integers, and the model rebuilt that way from a config.

`config.quantization` (written by `lmforge quantize`, compress/quantize.py) names them:

    {"bits": 8 | 4, "group_size": int or null (one group per row), "symmetric": bool,
     "method": "rtn" | "awq", "modules": ["blocks.0.attn.qkv", ..., "lm_head"]}

`build_model` builds the float model and then puts an empty `nn.QuantLinear` in place of each named
layer, so a quantised run loads through the same path as any other (the state dict then holds
`qweight`, `scales` and `zeros` where `weight` was). The Transformer layers' products always count;
the output head (`lm_head`) counts unless it is kept in float. Embeddings, norms and small task heads
stay float: their bytes are few, and an embedding is read one row per token.
"""

from __future__ import annotations

from torch import nn

from lmforge.errors import LmforgeError
from lmforge.models.modules import plain_linear, replace_module
from lmforge.nn.quantized import QuantLinear

HEAD = "lm_head"


def _in_layers(name: str) -> bool:
    return name.startswith("blocks.") or ".blocks." in name


def target_linears(model: nn.Module, head: bool = True) -> list[str]:
    """The names of the plain nn.Linear layers a quantisation replaces: every one inside the
    Transformer layers, and the output head when `head`."""
    return [name for name, m in model.named_modules()
            if type(m) is nn.Linear and (_in_layers(name) or (head and name.split(".")[-1] == HEAD))]


def quantized_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, QuantLinear)]


def group_for(spec: dict, in_features: int) -> int:
    return spec.get("group_size") or in_features


def apply_layout(model: nn.Module, spec: dict) -> nn.Module:
    """Put an empty QuantLinear (shapes only: the weights come from the checkpoint) where `spec` says."""
    for name in spec["modules"]:
        linear = plain_linear(model, name)
        if linear is None:
            raise LmforgeError(f"the quantisation in config.json names {name!r}, which is not a linear layer of this "
                               "model; restore config.json from the quantised run")
        q = QuantLinear(linear.in_features, linear.out_features, spec["bits"], group_for(spec, linear.in_features),
                        spec.get("symmetric", True), linear.bias is not None, device=linear.weight.device)
        replace_module(model, name, q)
    return model


def weights_count(model: nn.Module) -> int:
    """The weights the model computes with: its parameters (a shared one once), and each integer layer's
    in x out weights, however few bytes they take."""
    integer = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantLinear))
    return sum(p.numel() for p in model.parameters()) + integer  # parameters() yields a shared one once


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A float copy of a quantised model (each QuantLinear an nn.Linear holding s q, or s (u - z)), for
    formats that have no integer layers (a Hugging Face export): it computes what the quantised model
    computes, at float32's size. A quantised head no longer shares the embedding's values, so a tied
    model's copy is untied."""
    import copy
    import dataclasses

    import torch

    out = copy.deepcopy(model)
    names = quantized_names(out)
    for name in names:
        q = out.get_submodule(name)
        linear = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None, device=q.qweight.device)
        with torch.no_grad():
            linear.weight.copy_(q.dequantized())
            if q.bias is not None:
                linear.bias.copy_(q.bias)
        replace_module(out, name, linear)
    untied = out.config.tie_embeddings and any(n.split(".")[-1] == HEAD for n in names)  # an int head has its own
    out.config = dataclasses.replace(out.config, quantization=None,
                                     tie_embeddings=out.config.tie_embeddings and not untied)
    return out
