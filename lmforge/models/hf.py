"""Hugging Face checkpoints in and out: GPT-2 (`GPT2LMHeadModel`) and Llama (`LlamaForCausalLM`) shapes here,
BERT (`model_type` "bert") in models/hf_bert.py, which `load_hf` and `save_hf` hand it to.

Both load into `GPT`; a GPT whose config is one of the two shapes exports to a directory that
`transformers.AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` read. The mapping ({i} = layer):

    Hugging Face GPT-2                   Hugging Face Llama                        lmforge GPT
    transformer.wte.weight               model.embed_tokens.weight                 tok_emb.weight
    transformer.wpe.weight               (RoPE, no table)                          pos_emb.weight
    transformer.h.{i}.ln_1.*             model.layers.{i}.input_layernorm.*        blocks.{i}.norm1.*
    transformer.h.{i}.attn.c_attn.*  T   model.layers.{i}.self_attn.{q,k,v}_proj.* blocks.{i}.attn.qkv.*  (rows q|k|v)
    transformer.h.{i}.attn.c_proj.*  T   model.layers.{i}.self_attn.o_proj.*       blocks.{i}.attn.proj.*
    transformer.h.{i}.ln_2.*             model.layers.{i}.post_attention_layernorm.* blocks.{i}.norm2.*
    transformer.h.{i}.mlp.c_fc.*     T   model.layers.{i}.mlp.gate_proj.*          blocks.{i}.mlp.fc.* / mlp.gate.*
                                         model.layers.{i}.mlp.up_proj.*            blocks.{i}.mlp.up.*
    transformer.h.{i}.mlp.c_proj.*   T   model.layers.{i}.mlp.down_proj.*          blocks.{i}.mlp.proj.*
    transformer.ln_f.*                   model.norm.*                              norm.*
    lm_head.weight (absent when tied)    lm_head.weight (absent when tied)         lm_head.weight

T: GPT-2's Conv1D stores (in, out), the transpose of nn.Linear's (out, in). Llama's q/k rows are
already in the rotate-half RoPE layout that `lmforge.nn.apply_rope` uses, so they copy unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.gpt import GPT

log = logging.getLogger(__name__)

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")  # buffers old checkpoints saved
GPT2_SHAPE = dict(position="learned", norm="layernorm", bias=True)
LLAMA_SHAPE = dict(position="rope", norm="rmsnorm", activation="swiglu")


# --- config -------------------------------------------------------------------------------------------
def is_hf_dir(path: str | Path) -> bool:
    """A Hugging Face model directory: config.json naming a `model_type` or `architectures`."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg)


def read_hf_config(path: str | Path) -> dict:
    path = Path(path) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        cfg = e
    if not isinstance(cfg, dict):
        raise LmforgeError(f"cannot read {path} ({cfg}); give a Hugging Face model directory with a valid config.json")
    return cfg


def _unsupported(what: str) -> LmforgeError:
    return LmforgeError(f"this Hugging Face model uses {what}, which lmforge cannot express; "
                        "convert a GPT-2 or Llama checkpoint without it")


def config_from_hf(hf: dict) -> ModelConfig:
    """A transformers config.json (as a dict) -> the ModelConfig of the same network."""
    kind = hf.get("model_type")
    if kind is None:  # older or hand-written configs name only the class
        arch = str((hf.get("architectures") or [""])[0])
        kind = "gpt2" if arch.startswith("GPT2") else "llama" if arch.startswith("Llama") else arch or None
    if kind == "gpt2":
        if hf.get("add_cross_attention") or hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
            raise _unsupported("cross-attention or non-standard attention scaling")
        act = hf.get("activation_function", "gelu_new")
        if act not in GPT2_ACTIVATIONS:
            raise _unsupported(f"activation_function={act!r}")
        d = hf.get("n_embd", 768)
        return ModelConfig(
            vocab_size=hf.get("vocab_size", 50257), context_length=hf.get("n_positions", 1024),
            n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12), d_model=d, d_ff=hf.get("n_inner") or 4 * d,
            dropout=hf.get("resid_pdrop", 0.1), activation=GPT2_ACTIVATIONS[act],
            norm_eps=hf.get("layer_norm_epsilon", 1e-5), tie_embeddings=hf.get("tie_word_embeddings", True),
            init_std=hf.get("initializer_range", 0.02), **GPT2_SHAPE,
        )
    if kind == "llama":
        rope = dict(hf.get("rope_parameters") or {})
        scaling = hf.get("rope_scaling") or {}
        scaled = {rope.get("rope_type", "default"), scaling.get("rope_type", scaling.get("type", "default"))} - {"default"}
        if scaled:
            raise _unsupported(f"RoPE scaling ({scaled.pop()!r})")
        if hf.get("hidden_act", "silu") != "silu":
            raise _unsupported(f"hidden_act={hf['hidden_act']!r} (Llama's SwiGLU needs silu)")
        if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
            raise _unsupported("attention_bias different from mlp_bias (lmforge has one bias switch)")
        d, heads = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
        if hf.get("head_dim") not in (None, d // heads):
            raise _unsupported(f"head_dim={hf['head_dim']} different from hidden_size / num_attention_heads")
        return ModelConfig(
            vocab_size=hf.get("vocab_size", 32000), context_length=hf.get("max_position_embeddings", 2048),
            n_layer=hf.get("num_hidden_layers", 32), n_head=heads, n_kv_head=hf.get("num_key_value_heads") or heads,
            d_model=d, d_ff=hf.get("intermediate_size", 11008), dropout=hf.get("attention_dropout", 0.0),
            rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)), norm_eps=hf.get("rms_norm_eps", 1e-6),
            bias=bool(hf.get("attention_bias", False)), tie_embeddings=hf.get("tie_word_embeddings", False),
            init_std=hf.get("initializer_range", 0.02), **LLAMA_SHAPE,
        )
    raise LmforgeError(f"Hugging Face model_type {kind!r} is not supported; lmforge loads bert, gpt2 and llama checkpoints")


def hf_shape(cfg: ModelConfig) -> str:
    """'gpt2' or 'llama', or an LmforgeError naming the first setting with no Hugging Face equivalent."""
    fixed = dict(family="gpt", causal=True, norm_position="pre")
    if cfg.family == "gpt" and cfg.head != "none":
        raise LmforgeError(f"this GPT carries a fine-tuned {cfg.head!r} head, and export writes causal language models "
                           "(GPT2LMHeadModel, LlamaForCausalLM); export the pretrained run it was fine-tuned from")
    if cfg.position == "learned":
        kind, want = "gpt2", {**fixed, **GPT2_SHAPE, "n_kv_head": cfg.n_head}
        if cfg.activation not in GPT2_ACTIVATIONS.values():
            want["activation"] = "gelu_tanh"
    elif cfg.position == "rope":
        kind, want = "llama", {**fixed, **LLAMA_SHAPE}
    else:
        raise LmforgeError(f"model.position={cfg.position!r} has no Hugging Face equivalent; export supports the GPT-2 "
                           "shape (learned positions, LayerNorm) and the Llama shape (RoPE, RMSNorm, SwiGLU)")
    for key, value in want.items():
        if getattr(cfg, key) != value:
            raise LmforgeError(f"model.{key}={getattr(cfg, key)!r} has no equivalent in a Hugging Face {kind} model "
                               f"(which needs {key}={value!r}); only GPT-2- and Llama-shaped models export")
    return kind


def config_to_hf(cfg: ModelConfig, special_ids: dict[str, int], dtype: torch.dtype = torch.float32) -> dict:
    """The transformers config.json of `cfg`; special_ids maps bos/eos/pad to token ids."""
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": cfg.init_std,
              "torch_dtype": str(dtype).removeprefix("torch."), "use_cache": True,
              **{f"{r}_token_id": special_ids.get(r) for r in ("bos", "eos", "pad")}}
    if hf_shape(cfg) == "gpt2":
        act = {v: k for k, v in GPT2_ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[cfg.activation]
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": cfg.context_length,
                "n_embd": cfg.d_model, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.d_ff,
                "activation_function": act, "layer_norm_epsilon": cfg.norm_eps, "scale_attn_weights": True,
                **{k: cfg.dropout for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}, **common}
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.d_model,
            "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim, "hidden_act": "silu",
            "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta, "rope_scaling": None,  # transformers 4.x reads these two,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # 5.x this one
            "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": cfg.dropout, **common}


def stored_dtype(path: str | Path) -> torch.dtype | None:
    """The dtype a Hugging Face directory's config.json says its weights are stored in, if it names a
    floating one (torch_dtype, or dtype in transformers 5)."""
    try:
        hf = read_hf_config(path)
    except (OSError, ValueError, LmforgeError):
        return None
    name = hf.get("dtype") or hf.get("torch_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def end_ids(path: str | Path) -> tuple[int, ...]:
    """Every end-of-text id a Hugging Face directory names: generation_config.json's and config.json's
    eos_token_id, each one id or a list (Llama 3 lists end-of-text and end-of-turn)."""
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        try:
            eos = json.loads((Path(path) / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        ids += [i for i in (eos if isinstance(eos, list) else [eos]) if isinstance(i, int) and i not in ids]
    return tuple(ids)


def read_tokenizer_config(path: str | Path) -> dict:
    """tokenizer_config.json as a dict; {} where there is none or it cannot be read."""
    try:
        config = json.loads((Path(path) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def tokenizer_rules(path: Path) -> tuple[str, dict] | None:
    """How transformers 5's AutoTokenizer splits and joins this directory's text, where that is not
    tokenizer.json's own rules: ("llama", settings for Tokenizer.use_llama_rules) or ("gpt2",
    settings for Tokenizer.use_gpt2_rules); None where tokenizer.json is used as it is.

    The class named in tokenizer_config.json (else config.json, else the one transformers registers
    for the model type: GPT2Tokenizer for "gpt2"; Llama's reads tokenizer.json as it is) keeps
    tokenizer.json's vocabulary, merges, special tokens and post-processor, but the Llama and GPT-2
    classes set their own normalizer, pre-tokenizer and decoder. A Llama class over a byte-level
    tokenizer.json (Llama 3's) is read as it is, as transformers does."""
    config, model_config = read_tokenizer_config(path), read_hf_config(path)
    name = config.get("tokenizer_class") or model_config.get("tokenizer_class")
    if name is None:
        name = {"gpt2": "GPT2Tokenizer"}.get(model_config.get("model_type"))
    name = name.removesuffix("Fast") if isinstance(name, str) else None
    if name == "LlamaTokenizer":
        try:
            byte_level = '"ByteLevel"' in (path / "tokenizer.json").read_text(encoding="utf-8")
        except OSError:
            byte_level = False
        prefix = config.get("add_prefix_space")
        return None if byte_level else ("llama", {"legacy": bool(config.get("legacy", False)),
                                                   "add_prefix_space": True if prefix is None else bool(prefix)})
    if name == "GPT2Tokenizer":
        return "gpt2", {"add_prefix_space": bool(config.get("add_prefix_space", False))}
    return None


def special_ids_from_hf(path: str | Path, token_to_id: Callable[[str], int | None]) -> dict[str, int]:
    """The ids of the roles (bos, eos, pad, unk, cls, sep, mask) a Hugging Face directory names:
    tokenizer_config.json's token text where it names one the vocabulary holds (Llama 3's eos is
    "<|eot_id|>" there), else config.json's `<role>_token_id` (the first, where it lists several)."""
    config, hf = read_tokenizer_config(path), read_hf_config(path)
    out = {}
    for role in ("bos", "eos", "pad", "unk", "cls", "sep", "mask"):
        token = config.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        i = token_to_id(token) if isinstance(token, str) else None
        if i is None:
            i = hf.get(f"{role}_token_id")
            i = i[0] if isinstance(i, list) and i else i
        if isinstance(i, int) and not isinstance(i, bool):
            out[role] = i
    return out


# --- weights --------------------------------------------------------------------------------------------
def _names(cfg: ModelConfig) -> list[tuple[list[str], str, bool]]:
    """(HF names, lmforge name, HF stores it transposed) for every tensor; several HF names are stacked."""
    llama = hf_shape(cfg) == "llama"
    lin = ["weight", "bias"] if cfg.bias else ["weight"]
    norm = ["weight"] if llama else lin  # RMSNorm has no bias; GPT-2 always has biases
    if llama:
        top, layer = "model.", "model.layers.{i}."
        tops = [("embed_tokens", "tok_emb", ["weight"]), ("norm", "norm", norm)]
        parts = [("input_layernorm", "norm1", norm), ("self_attn.q_proj|self_attn.k_proj|self_attn.v_proj", "attn.qkv", lin),
                 ("self_attn.o_proj", "attn.proj", lin), ("post_attention_layernorm", "norm2", norm),
                 ("mlp.gate_proj", "mlp.gate", lin), ("mlp.up_proj", "mlp.up", lin), ("mlp.down_proj", "mlp.proj", lin)]
    else:
        top, layer = "transformer.", "transformer.h.{i}."
        tops = [("wte", "tok_emb", ["weight"]), ("wpe", "pos_emb", ["weight"]), ("ln_f", "norm", norm)]
        parts = [("ln_1", "norm1", norm), ("attn.c_attn", "attn.qkv", lin), ("attn.c_proj", "attn.proj", lin),
                 ("ln_2", "norm2", norm), ("mlp.c_fc", "mlp.fc", lin), ("mlp.c_proj", "mlp.proj", lin)]
    out = [([f"{top}{hf}.{s}"], f"{lm}.{s}", False) for hf, lm, sfx in tops for s in sfx]
    for i in range(cfg.n_layer):
        for hf, lm, sfx in parts:
            conv = not llama and not lm.startswith("norm")  # GPT-2's Conv1D
            out += [([layer.format(i=i) + f"{h}.{s}" for h in hf.split("|")], f"blocks.{i}.{lm}.{s}", conv and s == "weight")
                    for s in sfx]
    if not cfg.tie_embeddings:
        out.append((["lm_head.weight"], "lm_head.weight", False))
    return out


def state_dict_from_hf(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename (and transpose / stack) a transformers state dict into GPT's parameter names."""
    used, sd = set(), {}
    for hf_names, lm, transposed in _names(cfg):
        parts = []
        for name in hf_names:
            key = name if name in hf else name.split(".", 1)[1]  # a bare base model saves no "transformer." prefix
            if key not in hf:
                raise LmforgeError(f"the checkpoint has no tensor {name}; it is incomplete or not the model its config.json describes")
            parts.append(hf[key].t() if transposed else hf[key])
            used.add(key)
        sd[lm] = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    extra = [k for k in hf if k not in used and not k.endswith(IGNORED_SUFFIXES)
             and not (cfg.tie_embeddings and k == "lm_head.weight")]
    if extra:
        raise LmforgeError(f"the checkpoint holds {extra[0]}, which its config.json does not explain; "
                           "lmforge loads plain GPT-2 and Llama checkpoints")
    return sd


def state_dict_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """GPT's parameters under transformers names (contiguous copies, no shared storage)."""
    cfg, sd = model.config, model.state_dict()
    H, G, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    out = {}
    for hf_names, lm, transposed in _names(cfg):
        t = sd[lm].detach()
        parts = t.split([H * D, G * D, G * D], dim=0) if len(hf_names) == 3 else [t.t() if transposed else t]
        out.update({n: p.cpu().contiguous().clone() for n, p in zip(hf_names, parts)})
    return out


# --- directories ------------------------------------------------------------------------------------------
def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LmforgeError(f"{index} is not a valid shard index; download or save the model again") from None
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise LmforgeError(f"{path} has no model.safetensors (a pickled pytorch_model.bin is not loaded); "
                           "re-save the model with transformers' save_pretrained, which writes safetensors")
    weights = {}
    for name in files:
        try:
            weights.update(load_file(str(path / name)))
        except (SafetensorError, OSError) as e:
            raise LmforgeError(f"{path / name} is missing or damaged ({str(e)[:120]}); download or save it again") from None
    return weights


def is_bert(hf: dict) -> bool:
    return hf.get("model_type") == "bert" or ("model_type" not in hf and
                                              str((hf.get("architectures") or [""])[0]).startswith("Bert"))


def load_hf(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A Hugging Face GPT-2 / Llama directory -> GPT in eval mode, float32 (a BERT one -> Bert, see hf_bert)."""
    path = Path(path)
    hf_cfg = read_hf_config(path)
    if is_bert(hf_cfg):
        from lmforge.models import hf_bert

        model, fresh = hf_bert.load_bert(path, device)
        if fresh:
            log.info("%s has no %s; %s keep%s a fresh initialisation", path, " or ".join(fresh),
                     "they" if len(fresh) > 1 else "it", "" if len(fresh) > 1 else "s")
        return model
    cfg = config_from_hf(hf_cfg)
    model = GPT(cfg)
    sd = {k: v.float() for k, v in state_dict_from_hf(read_hf_weights(path), cfg).items()}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise LmforgeError(f"the weights in {path} do not match its config.json ({str(e).splitlines()[-1].strip()[:160]}); "
                           "fix config.json or save the model again") from None
    return model.to(device).eval()


def write_atomically(out: str | Path, fill: Callable[[Path], None]) -> Path:
    """Make the directory `out` with what `fill(tmp)` writes into a temporary folder beside it, which is
    renamed to `out` at the end, so a failure leaves nothing half-written. `out` must not exist or be empty
    (a link to an empty directory: the directory it points to is written)."""
    out = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"{out} already exists and is not an empty directory; choose a new output directory or remove it")
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        fill(tmp)
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(f, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except OSError as e:  # no permission, no room
        raise LmforgeError(f"cannot write {out}: {e.strerror or e}; choose a directory you can write to, with room "
                           "for the model") from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def save_hf(model: torch.nn.Module, out: str | Path, tokenizer_json: str | None = None,
            special_tokens: dict[str, tuple[str, int]] | None = None, chat_template: str | list | None = None,
            end_ids: tuple[int, ...] = (), dtype: torch.dtype | None = None) -> Path:
    """Write `model` (and the tokenizer, if given) as a Hugging Face directory, atomically (write_atomically).
    special_tokens maps a role (bos, eos, pad, unk, ...) to (token, id); chat_template (Jinja) goes in
    tokenizer_config.json with the tokenizer (a string, or transformers' list of named templates); end_ids,
    when there are several, are written as the eos_token_id list; dtype (default: the model's) is the one
    the weights are stored in. Encoders go to hf_bert.save_bert."""
    out, specials = Path(out), dict(special_tokens or {})
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"{out} already exists and is not an empty directory; choose a new output directory or remove it")
    cfg = model.config
    if cfg.family != "gpt":
        from lmforge.models import hf_bert

        return hf_bert.save_bert(model, out, tokenizer_json, specials)
    ids = {role: i for role, (_, i) in specials.items()}
    dtype = dtype or next(model.parameters()).dtype
    hf_config = config_to_hf(cfg, ids, dtype)  # raises before anything is written
    if len(end_ids) > 1:  # e.g. Llama 3's end-of-text and end-of-turn
        hf_config["eos_token_id"] = list(end_ids)
    generation = {k: v for k, v in hf_config.items() if k.endswith("_token_id") and v is not None}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict_to_hf(model).items()}
    return write_hf_dir(out, hf_config, tensors, tokenizer_json, specials, cfg.context_length,
                        {"generation_config.json": generation}, chat_template)


def write_hf_dir(out: str | Path, hf_config: dict, tensors: dict, tokenizer_json: str | None, specials: dict,
                 context_length: int, extra: dict[str, dict] | None = None, chat_template: str | list | None = None,
                 tokenizer_settings: dict | None = None) -> Path:
    """A Hugging Face model directory, atomically: config.json, model.safetensors, the `extra` JSON
    files, and the tokenizer (tokenizer.json, special_tokens_map.json, tokenizer_config.json, with
    `tokenizer_settings` added) that `AutoTokenizer.from_pretrained` loads. `specials` maps a role to
    (token string, id)."""

    def fill(tmp: Path) -> None:
        def write(name: str, obj: dict) -> None:
            (tmp / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

        write("config.json", hf_config)
        for name, obj in (extra or {}).items():
            write(name, obj)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer_json is not None:
            (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
            tokens = {f"{role}_token": tok for role, (tok, _) in specials.items()}
            write("special_tokens_map.json", tokens)
            write("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", **tokens,
                                            "model_max_length": context_length, "clean_up_tokenization_spaces": False,
                                            **({"chat_template": chat_template} if chat_template else {}),
                                            **(tokenizer_settings or {})})

    return write_atomically(out, fill)
