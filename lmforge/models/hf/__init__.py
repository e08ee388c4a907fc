"""Hugging Face model directories both ways: `load_hf(path)` reads one into an lmforge model,
`save_hf(model, out, ...)` writes one that `transformers` reads, and the readers below answer what
the tokenizer and the generator need to know about a directory (its tokenizer class's text rules,
its special tokens, its end-of-text ids, its stored dtype).

A directory is read once into an `HFDir` (io.py); every function here takes that or a path. The
mapping of each family lives in its own module (gpt.py: GPT-2 and Llama; bert.py: BERT; t5.py, bart.py,
marian.py: encoder-decoders), chosen by config.json's model_type through MAPPINGS (for export, by the
model's family, and for an encoder-decoder by its shape: encdec.hf_format): a new family is one new
module and one entry there. See common.py for what a mapping provides.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.hf import bart, bert, encdec, gpt, marian, t5
from lmforge.models.hf.common import ACTIVATIONS, load_mapped, model_type
from lmforge.models.hf.io import HFDir, as_dir, check_empty, write_dir

__all__ = ["ACTIVATIONS", "HFDir", "MAPPINGS", "config_from_hf", "end_ids", "is_hf_dir", "load_hf", "read_hf_config",
           "read_model", "read_tokenizer_config", "save_hf", "special_ids_from_hf", "stored_dtype", "tokenizer_rules"]

log = logging.getLogger(__name__)

MAPPINGS: tuple[ModuleType, ...] = (gpt, bert, t5, bart, marian)
MODEL_TYPES = {t: prefix for m in MAPPINGS for t, prefix in m.MODEL_TYPES.items()}


def mapping_for(hf: dict) -> ModuleType:
    """The mapping that loads the model config.json describes."""
    kind = model_type(hf, MODEL_TYPES)
    found = next((m for m in MAPPINGS if kind in m.MODEL_TYPES), None)
    if found is None:
        names = sorted(MODEL_TYPES)
        raise LmforgeError(f"Hugging Face model_type {kind!r} is not supported; lmforge loads "
                           f"{', '.join(names[:-1])} and {names[-1]} checkpoints")
    return found


# --- reading ---------------------------------------------------------------------------------------------
def is_hf_dir(path: HFDir | str | Path) -> bool:
    """A Hugging Face model directory: config.json naming a `model_type` or `architectures`."""
    try:
        config = as_dir(path).config
    except LmforgeError:
        return False
    return "model_type" in config or "architectures" in config


def read_hf_config(path: HFDir | str | Path) -> dict:
    return as_dir(path).config


def read_tokenizer_config(path: HFDir | str | Path) -> dict:
    """tokenizer_config.json as a dict; {} where there is none or it cannot be read."""
    try:
        return as_dir(path).tokenizer_config
    except LmforgeError:
        return {}


def config_from_hf(hf: dict) -> ModelConfig:
    """A transformers config.json (as a dict) -> the ModelConfig of the same network."""
    return mapping_for(hf).config_from_hf(hf)


def read_model(path: HFDir | str | Path) -> tuple[nn.Module, list[str]]:
    """(the model a directory holds, in eval mode, float32 on the CPU; the optional parts its checkpoint
    lacked, which keep a fresh initialisation, e.g. ["mlm head", "nsp head"] for a bare BertModel)."""
    d = as_dir(path)
    return load_mapped(mapping_for(d.config), d)


def load_hf(path: HFDir | str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A Hugging Face GPT-2 / Llama / BERT / T5 / BART / Marian directory -> GPT, Bert (or a task model) or
    Seq2Seq in eval mode, float32."""
    d = as_dir(path)
    model, fresh = read_model(d)
    if fresh:
        log.info("%s has no %s; %s keep%s a fresh initialisation", d.path, " or ".join(fresh),
                 "they" if len(fresh) > 1 else "it", "" if len(fresh) > 1 else "s")
    return model.to(device).eval()


def stored_dtype(path: HFDir | str | Path) -> torch.dtype | None:
    """The dtype a Hugging Face directory's config.json says its weights are stored in, if it names a
    floating one (torch_dtype, or dtype in transformers 5)."""
    try:
        hf = as_dir(path).config
    except LmforgeError:
        return None
    name = hf.get("dtype") or hf.get("torch_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def end_ids(path: HFDir | str | Path) -> tuple[int, ...]:
    """Every end-of-text id a Hugging Face directory names: generation_config.json's and config.json's
    eos_token_id, each one id or a list (Llama 3 lists end-of-text and end-of-turn)."""
    try:
        d = as_dir(path)
    except LmforgeError:
        return ()
    ids: list[int] = []
    for source in (d.generation_config, d.config):
        eos = source.get("eos_token_id")
        ids += [i for i in (eos if isinstance(eos, list) else [eos])
                if isinstance(i, int) and not isinstance(i, bool) and i not in ids]
    return tuple(ids)


def tokenizer_rules(path: HFDir | str | Path) -> tuple[str, dict] | None:
    """How transformers 5's AutoTokenizer splits and joins this directory's text, where that is not
    tokenizer.json's own rules: ("llama", settings for Tokenizer.use_llama_rules) or ("gpt2",
    settings for Tokenizer.use_gpt2_rules); None where tokenizer.json is used as it is.

    The class named in tokenizer_config.json (else config.json, else the one transformers registers
    for the model type: GPT2Tokenizer for "gpt2"; Llama's reads tokenizer.json as it is) keeps
    tokenizer.json's vocabulary, merges, special tokens and post-processor, but the Llama and GPT-2
    classes set their own normalizer, pre-tokenizer and decoder. A Llama class over a byte-level
    tokenizer.json (Llama 3's) is read as it is, as transformers does."""
    d = as_dir(path)
    config = d.tokenizer_config
    name = config.get("tokenizer_class") or d.config.get("tokenizer_class")
    if name is None:
        name = {"gpt2": "GPT2Tokenizer"}.get(d.config.get("model_type"))
    name = name.removesuffix("Fast") if isinstance(name, str) else None
    if name == "LlamaTokenizer":
        try:
            byte_level = '"ByteLevel"' in (d.tokenizer_json or "")
        except LmforgeError:
            byte_level = False
        prefix = config.get("add_prefix_space")
        return None if byte_level else ("llama", {"legacy": bool(config.get("legacy", False)),
                                                   "add_prefix_space": True if prefix is None else bool(prefix)})
    if name == "GPT2Tokenizer":
        return "gpt2", {"add_prefix_space": bool(config.get("add_prefix_space", False))}
    return None


def special_ids_from_hf(path: HFDir | str | Path, token_to_id: Callable[[str], int | None]) -> dict[str, int]:
    """The ids of the roles (bos, eos, pad, unk, cls, sep, mask) a Hugging Face directory names:
    tokenizer_config.json's token text where it names one the vocabulary holds (Llama 3's eos is
    "<|eot_id|>" there), else config.json's `<role>_token_id` (the first, where it lists several)."""
    d = as_dir(path)
    out = {}
    for role in ("bos", "eos", "pad", "unk", "cls", "sep", "mask"):
        token = d.tokenizer_config.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        i = token_to_id(token) if isinstance(token, str) else None
        if i is None:
            i = d.config.get(f"{role}_token_id")
            i = i[0] if isinstance(i, list) and i else i
        if isinstance(i, int) and not isinstance(i, bool):
            out[role] = i
    return out


# --- writing ---------------------------------------------------------------------------------------------
def _check_heads(cfg) -> None:
    """Heads narrower than d_model / n_head (some pruned away) fit only formats that name the head size."""
    if cfg.n_head * cfg.head_dim == cfg.d_model or (cfg.family == "gpt" and cfg.position == "rope") or \
            (cfg.family == "seq2seq" and cfg.position == "t5"):
        return
    raise LmforgeError(f"this model's {cfg.n_head} heads of {cfg.head_dim} do not fill d_model={cfg.d_model} (heads were "
                       "pruned), which this Hugging Face format cannot hold (only Llama and T5 name a head size); prune "
                       "MLP neurons instead (--structure neurons), or keep the model as an lmforge run")


def save_hf(model: nn.Module, out: str | Path, tokenizer_json: str | None = None,
            special_tokens: dict[str, tuple[str, int]] | None = None, chat_template: str | list | None = None,
            end_ids: tuple[int, ...] = (), dtype: torch.dtype | None = None) -> Path:
    """Write `model` (and the tokenizer, if given) as a Hugging Face directory at `out`, atomically: a model
    with no Hugging Face shape, a non-empty `out`, a full disk or an unwritable place is one error, and
    nothing is left half-written. special_tokens maps a role (bos, eos, pad, unk, ...) to (token, id); the
    other arguments are the mapping's (gpt.export: chat_template, end_ids, dtype). An encoder-decoder is
    written as T5, BART or Marian, by its positions (t5, learned, sinusoidal)."""
    check_empty(out)
    family = model.config.family
    mappings = [m for m in MAPPINGS if family in m.FAMILIES]
    if len(mappings) > 1:  # several formats hold this family: the model's shape picks one (or is refused)
        kind = encdec.hf_format(model.config)
        mappings = [m for m in mappings if m.FORMAT == kind]
    if not mappings:
        raise LmforgeError(f"model.family={family!r} has no Hugging Face export; export a GPT, BERT or "
                           "encoder-decoder model")
    mapping = mappings[0]
    _check_heads(model.config)
    export = mapping.export(model, tokenizer_json, dict(special_tokens or {}), chat_template, end_ids, dtype)
    return write_dir(out, export)
