"""What every Hugging Face mapping shares: the activation names, reading config.json's numbers with
their types and ranges checked, and loading weights in two passes (shapes from the safetensors
headers first, on the meta device, then the tensors).

A mapping is a module (gpt.py, bert.py) with:
    MODEL_TYPES          {config.json model_type: the architecture class prefix naming it, e.g. "GPT2"}
    FAMILIES             the lmforge families it exports
    config_from_hf(hf)   config.json (a dict) -> ModelConfig
    state_dict_from_hf(tensors, cfg) -> (lmforge state dict, optional parts absent from the checkpoint)
    keep_fresh(cfg, absent) -> prefixes of lmforge names that may keep their fresh initialisation
    export(model, tokenizer_json, specials, chat_template, end_ids, dtype) -> io.HFExport
and, where several mappings export one family (seq2seq: T5, BART, Marian), FORMAT, the name
encdec.hf_format gives the configs it writes; where config.json leaves a setting to the checkpoint
(whether an encoder-decoder's lm_head is tied), fit_to_weights(cfg, the weights' names) -> ModelConfig.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.hf.io import HFDir
from lmforge.models.registry import build_model
from lmforge.models.shapes import MetaOps, check_weight_shapes

# Hugging Face's activation names (GPT-2's activation_function, BERT's and Llama's hidden_act) -> lmforge's.
# silu names Llama's gated MLP (SwiGLU); the others an ungated one.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
               "silu": "swiglu"}
GATED = ("swiglu",)
TO_HF = {ours: name for name, ours in reversed(ACTIVATIONS.items())}  # each lmforge name's first HF name


def unsupported(what: str, model: str = "model", instead: str = "a GPT-2 or Llama checkpoint") -> LmforgeError:
    return LmforgeError(f"this Hugging Face {model} uses {what}, which lmforge cannot express; convert {instead} "
                        "without it")


def model_type(hf: dict, types: dict[str, str]) -> str | None:
    """config.json's model_type; where it names none (older or hand-written configs), the type whose
    architecture prefix (types: model_type -> prefix) starts its first architecture, else that name."""
    kind = hf.get("model_type")
    if kind is None:
        archs = hf.get("architectures")
        arch = str(archs[0]) if isinstance(archs, list) and archs else ""
        kind = next((t for t, prefix in types.items() if arch.startswith(prefix)), arch or None)
    return kind if isinstance(kind, str) or kind is None else repr(kind)


def activation_from_hf(name: Any, key: str, gated: bool, model: str = "model",
                       instead: str = "a GPT-2 or Llama checkpoint") -> str:
    """lmforge's name for config.json's activation `name` (read from `key`), for a gated MLP or not."""
    ours = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if ours is None or (ours in GATED) != gated:
        names = ", ".join(k for k, v in ACTIVATIONS.items() if (v in GATED) == gated)
        raise unsupported(f"{key}={name!r} (supported: {names})", model, instead)
    return ours


def read_values(hf: dict, keys: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """{ModelConfig field: config.json's value} for keys = {field: (config.json key, default)}, a null or
    absent key taking its default; each value's type and range checked (ModelConfig.check_values)
    before any arithmetic on it, an error naming config.json's own key."""
    values = {f: hf[key] if hf.get(key) is not None else default for f, (key, default) in keys.items()}
    ModelConfig.check_values({f: v for f, v in values.items() if v is not None},
                             name=lambda f: f"config.json's {keys[f][0]}")
    return values


def _meta_tensors(header: dict[str, dict]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(info["shape"], device="meta") for name, info in header.items()}


def load_mapped(mapping: ModuleType, d: HFDir) -> tuple[nn.Module, list[str]]:
    """The model a Hugging Face directory holds (float32, on the CPU) and the optional parts its checkpoint
    lacks. The tensors' names and shapes are checked against the config from the safetensors headers
    first, so a config.json at odds with its weights is refused before anything is allocated."""
    cfg, header = mapping.config_from_hf(d.config), d.weight_header()
    if hasattr(mapping, "fit_to_weights"):
        cfg = mapping.fit_to_weights(cfg, header)
    try:
        with MetaOps():  # shapes, no storage
            meta_sd, absent = mapping.state_dict_from_hf(_meta_tensors(header), cfg)
    except RuntimeError as e:  # tensors stacked or transposed that cannot be: shapes at odds with the config
        raise LmforgeError(f"the weights in {d.path} do not match its config.json ({str(e).splitlines()[0][:160]}); "
                           "fix config.json or save the model again") from None
    check_weight_shapes(cfg, meta_sd, str(d.path), mapping.keep_fresh(cfg, absent))
    sd, absent = mapping.state_dict_from_hf(d.read_weights(), cfg)
    model = build_model(cfg)
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)  # names checked above
    except RuntimeError as e:
        raise LmforgeError(f"the weights in {d.path} do not match its config.json "
                           f"({str(e).splitlines()[-1].strip()[:160]}); fix config.json or save the model again") from None
    return model.eval(), absent
