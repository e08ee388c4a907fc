"""What the encoder-decoder mappings (t5.py, bart.py, marian.py) share: which format an lmforge Seq2Seq
exports as, tensors renamed both ways (q|k|v and k|v stacked along dim 0), the activation names, the
tying of the output projection read from the checkpoint, a score scale folded into W_q on export, the
special ids transformers' generation reads, and all that BART and Marian have in common (fairseq's
layout: config keys, layer names, final_logits_bias).

Tying: transformers 5 decides from the checkpoint whether lm_head is its own tensor (it keeps one that
the file holds and differs from the embedding, whatever tie_word_embeddings says), so lmforge does too.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.hf.common import ACTIVATIONS, GATED, read_values, unsupported
from lmforge.models.hf.io import HFExport

Names = list[tuple[list[str], str]]  # (Hugging Face names, stacked along dim 0; the lmforge name)
FORMATS = {"t5": "T5", "learned": "BART", "sinusoidal": "Marian"}  # position scheme -> the format holding it
# activation_function / feed_forward_proj names of an ungated MLP -> lmforge's (swish: Marian's opus-mt models)
PLAIN = {**{k: v for k, v in ACTIVATIONS.items() if v not in GATED}, "silu": "silu", "swish": "silu"}
TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def hf_format(cfg: ModelConfig) -> str:
    """The Hugging Face format an encoder-decoder of `cfg` exports as: T5, BART or Marian, by its positions."""
    if cfg.position not in FORMATS:
        raise LmforgeError(f"model.position={cfg.position!r} has no Hugging Face encoder-decoder equivalent; export "
                           "t5 (T5), learned (BART) or sinusoidal (Marian) positions")
    return FORMATS[cfg.position]


def require(cfg: ModelConfig, want: dict[str, Any], kind: str) -> None:
    """Refuse, naming the first setting, a model that is not the `kind` shape `want` describes."""
    for key, value in want.items():
        if getattr(cfg, key) != value:
            raise LmforgeError(f"model.{key}={getattr(cfg, key)!r} has no equivalent in a Hugging Face {kind} model "
                               f"(which needs {key}={value!r}); only T5-, BART- and Marian-shaped encoder-decoders "
                               "export")


def plain_activation(name: Any, key: str, kind: str) -> str:
    """lmforge's name for an ungated MLP's activation (config.json's `key`)."""
    if not isinstance(name, str) or name not in PLAIN:
        raise unsupported(f"{key}={name!r} (supported: {', '.join(PLAIN)})", kind, f"a plain {kind} checkpoint")
    return PLAIN[name]


def token_id(hf: dict, key: str, default: int | None, vocab: int) -> int:
    """config.json's id `key` (else `default`), a token of the vocabulary."""
    value = hf[key] if hf.get(key) is not None else default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < vocab:
        raise LmforgeError(f"config.json's {key}={value!r} must be a token id below vocab_size={vocab}; fix config.json")
    return int(value)


def same_size(hf: dict, field: str, ours: str, theirs: str, value: int, default: int) -> None:
    """The decoder's size (config.json's `theirs`, else transformers' `default`) equals the encoder's (`ours`,
    read as `value`): lmforge gives both stacks' layers one shape."""
    other = hf[theirs] if hf.get(theirs) is not None else default
    ModelConfig.check_values({field: other}, name=lambda _: f"config.json's {theirs}")
    if other != value:
        raise LmforgeError(f"config.json's {theirs}={other} differs from {ours}={value}, which lmforge cannot express "
                           "(its encoder and decoder layers have one shape); convert a checkpoint where they are equal")


def refuse_settings(hf: dict, layout: dict[str, Any], kind: str) -> None:
    """Older config.json keys (fairseq's) that, where present, must describe this layout."""
    for key, value in layout.items():
        if key in hf and hf[key] is not None and hf[key] != value:
            raise unsupported(f"{key}={hf[key]!r} ({kind} needs {value!r})", kind, f"a plain {kind} checkpoint")


# --- weights --------------------------------------------------------------------------------------------
def layers(hf_layer: str, stack: str, n: int, parts: list[tuple[str, str]], suffixes: tuple[str, ...]) -> Names:
    """Each of a stack's n layers' tensors: hf_layer ("model.encoder.layers.{i}.") + each part ("a|b" stacks a
    and b) + suffix <-> stack.blocks.{i}.ours.suffix."""
    return [([f"{hf_layer.format(i=i)}{h}.{s}" for h in hf.split("|")], f"{stack}.blocks.{i}.{ours}.{s}")
            for i in range(n) for hf, ours in parts for s in suffixes]


def fit_to_weights(cfg: ModelConfig, names: dict | set) -> ModelConfig:
    """`cfg` with its output projection untied exactly where the checkpoint holds an lm_head.weight."""
    untied = "lm_head.weight" in names
    return dataclasses.replace(cfg, tie_embeddings=not untied) if cfg.tie_embeddings == untied else cfg


def from_hf(hf: dict[str, torch.Tensor], names: Names, key: Callable[[str], str]) -> tuple[dict, set[str]]:
    """Our tensors from `hf` (each HF name looked up as key(name)), and the HF names used."""
    sd, used = {}, set()
    for hf_names, ours in names:
        keys = [key(n) for n in hf_names]
        lacking = next((n for n, k in zip(hf_names, keys) if k not in hf), None)
        if lacking is not None:
            raise LmforgeError(f"the checkpoint has no tensor {lacking}; it is incomplete or not the model its "
                               "config.json describes")
        sd[ours] = torch.cat([hf[k] for k in keys], dim=0) if len(keys) > 1 else hf[keys[0]]
        used.update(keys)
    return sd, used


def check_copies(hf: dict[str, torch.Tensor], copies: list[str], embedding: torch.Tensor, kind: str) -> None:
    """The stacks' own input embeddings a checkpoint may hold (transformers 5 unties them from the shared one
    along with lm_head) must be copies of it: lmforge has one embedding matrix."""
    for name in [n for n in copies if n in hf and not embedding.is_meta]:
        if not torch.equal(hf[name], embedding):
            raise unsupported(f"an input embedding per stack ({name} differs from the shared one)", kind,
                              f"a {kind} checkpoint")


def refuse_extra(hf: dict, used: set[str], ignored: tuple[str, ...], kind: str) -> None:
    extra = [k for k in hf if k not in used and k not in ignored]
    if extra:
        raise LmforgeError(f"the checkpoint holds {extra[0]}, which its config.json does not explain; lmforge loads "
                           f"plain {kind} checkpoints")


def to_hf(sd: dict[str, torch.Tensor], names: Names) -> dict[str, torch.Tensor]:
    """`names`' tensors from our state dict under Hugging Face names (stacked ones split evenly), as copies."""
    out = {}
    for hf_names, ours in names:
        t = sd[ours].detach()
        parts = t.chunk(len(hf_names), dim=0) if len(hf_names) > 1 else [t]
        out.update({n: p.cpu().contiguous().clone() for n, p in zip(hf_names, parts)})
    return out


def fold_scale(tensors: dict[str, torch.Tensor], cfg: ModelConfig, theirs: float, query: tuple[str, ...]) -> None:
    """Where our score scale differs from the format's fixed one (`theirs`), fold the ratio into every
    query projection (the tensors whose names end in `query`): (s q) k^T = s (q k^T), exactly."""
    ours = cfg.head_dim ** -0.5 if cfg.attention_scale is None else cfg.attention_scale
    if ours != theirs:
        for name in [n for n in tensors if n.endswith(query)]:
            tensors[name] = tensors[name] * (ours / theirs)


# --- BART and Marian (fairseq's layout) -------------------------------------------------------------------
def fairseq_config(hf: dict, keys: dict, shape: dict, kind: str, start_default: int | None) -> ModelConfig:
    """BART's or Marian's config.json -> ModelConfig: one layer shape for both stacks, an ungated activation."""
    values = read_values(hf, keys)
    same_size(hf, "n_head", "encoder_attention_heads", "decoder_attention_heads", values["n_head"], keys["n_head"][1])
    same_size(hf, "d_ff", "encoder_ffn_dim", "decoder_ffn_dim", values["d_ff"], keys["d_ff"][1])
    act = plain_activation(hf.get("activation_function", "gelu"), "activation_function", kind)
    start = token_id(hf, "decoder_start_token_id", start_default, values["vocab_size"])
    return ModelConfig(**values, **shape, activation=act, decoder_start_id=start)


def check_fairseq_shape(cfg: ModelConfig, shape: dict, kind: str) -> None:
    """Refuse, by the first setting, a model `kind` (BART, Marian: `shape`) cannot hold."""
    require(cfg, {**{k: v for k, v in shape.items() if k not in ("causal", "logits_bias")}, "n_kv_head": cfg.n_head},
            kind)
    if cfg.activation not in TO_HF:
        raise LmforgeError(f"model.activation={cfg.activation!r} has no equivalent in a Hugging Face {kind} model "
                           f"(whose MLP is ungated: {', '.join(TO_HF)}); only T5 holds gated ones")
    if cfg.tie_embeddings and cfg.tied_output_scale:
        require(cfg, {"tied_output_scale": False}, kind)


def fairseq_config_to_hf(cfg: ModelConfig, ids: dict[str, int | None]) -> dict:
    """What BART's and Marian's config.json share. Each layer's dropouts are lmforge's one dropout, which
    also drops attention weights but not the activations."""
    return {"vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "encoder_layers": cfg.n_layer,
            "decoder_layers": cfg.n_decoder_layer, "encoder_attention_heads": cfg.n_head,
            "decoder_attention_heads": cfg.n_head, "encoder_ffn_dim": cfg.d_ff, "decoder_ffn_dim": cfg.d_ff,
            "activation_function": TO_HF[cfg.activation], "max_position_embeddings": cfg.context_length,
            "scale_embedding": cfg.embed_scale, "dropout": cfg.dropout, "attention_dropout": cfg.dropout,
            "activation_dropout": 0.0, "init_std": cfg.init_std, "tie_word_embeddings": cfg.tie_embeddings,
            "is_encoder_decoder": True, "forced_eos_token_id": None, **ids}


COPIES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")  # of model.shared.weight
_ATTN = [("self_attn.q_proj|self_attn.k_proj|self_attn.v_proj", "attn.qkv"), ("self_attn.out_proj", "attn.proj"),
         ("self_attn_layer_norm", "norm1")]
_FFN = [("fc1", "mlp.fc"), ("fc2", "mlp.proj")]
ENCODER_LAYER = _ATTN + _FFN + [("final_layer_norm", "norm2")]
DECODER_LAYER = _ATTN + [("encoder_attn.q_proj", "cross.q"), ("encoder_attn.k_proj|encoder_attn.v_proj", "cross.kv"),
                         ("encoder_attn.out_proj", "cross.proj"), ("encoder_attn_layer_norm", "norm2")] + \
    _FFN + [("final_layer_norm", "norm3")]


def fairseq_names(cfg: ModelConfig) -> Names:
    """BART's and Marian's common tensors: the shared embedding, every layer, an untied lm_head."""
    lin = ("weight", "bias")
    out = [(["model.shared.weight"], "tok_emb.weight")]
    out += layers("model.encoder.layers.{i}.", "encoder", cfg.n_layer, ENCODER_LAYER, lin)
    out += layers("model.decoder.layers.{i}.", "decoder", cfg.n_decoder_layer, DECODER_LAYER, lin)
    return out + ([] if cfg.tie_embeddings else [(["lm_head.weight"], "lm_head.weight")])


def unprefixed(hf: dict) -> Callable[[str], str]:
    """Each name as the checkpoint has it: a bare BartModel / MarianModel saves no `model.` prefix."""
    return lambda name: name if name in hf or not name.startswith("model.") else name.removeprefix("model.")


def fairseq_from_hf(hf: dict[str, torch.Tensor], cfg: ModelConfig, names: Names, ignored: tuple[str, ...],
                    kind: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our tensors by `names`, the tied lm_head and final_logits_bias (1, V) -> (V,); absent (a bare
    model), the bias keeps its zeros and is reported. The stacks' embeddings must be copies of the shared
    one; any other tensor but `ignored` ones is refused."""
    key, absent = unprefixed(hf), []
    sd, used = from_hf(hf, names, key)
    check_copies(hf, [key(n) for n in COPIES], sd["tok_emb.weight"], kind)
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    if "final_logits_bias" in hf:
        sd["final_logits_bias"] = hf["final_logits_bias"].reshape(-1)
        used.add("final_logits_bias")
    else:
        absent.append("final logits bias")
    refuse_extra(hf, used, tuple(key(n) for n in (*COPIES, *ignored)), kind)
    return sd, absent


def fairseq_to_hf(model: torch.nn.Module, names: Names) -> dict[str, torch.Tensor]:
    """BART's and Marian's tensors, with final_logits_bias (zeros for a model without one), any score scale
    other than 1/sqrt(head size) folded into W_q, and, untied, the stacks' input embeddings as copies of
    the shared one (transformers 5 unties them too, and would start them at random)."""
    cfg, sd = model.config, model.state_dict()
    tensors = to_hf(sd, names)
    if not cfg.tie_embeddings:
        tensors.update({n: tensors["model.shared.weight"].clone() for n in COPIES})
    bias = sd["final_logits_bias"] if cfg.logits_bias else torch.zeros(cfg.vocab_size)
    tensors["final_logits_bias"] = bias.detach().cpu().reshape(1, -1).clone()
    fold_scale(tensors, cfg, cfg.head_dim ** -0.5, ("q_proj.weight", "q_proj.bias"))
    return tensors


# --- export ---------------------------------------------------------------------------------------------
def special_ids(cfg: ModelConfig, specials: dict[str, tuple[str, int]], end_ids: tuple[int, ...],
                start_role: str) -> dict[str, int | None]:
    """config.json's bos/eos/pad/decoder_start ids: the tokenizer's, else end_ids' first for eos; the
    role the decoder starts from (T5, Marian: pad; BART: eos) defaults to decoder_start_id."""
    ids = {role: i for role, (_, i) in specials.items() if role in ("bos", "eos", "pad")}
    if "eos" not in ids and end_ids:
        ids["eos"] = end_ids[0]
    ids.setdefault(start_role, cfg.decoder_start_id)
    return {**{f"{r}_token_id": ids.get(r) for r in ("bos", "eos", "pad")}, "decoder_start_token_id": cfg.decoder_start_id}


def export(model: torch.nn.Module, config: dict, tensors: dict[str, torch.Tensor], tokenizer_json: str | None,
           specials: dict[str, tuple[str, int]], dtype: torch.dtype | None) -> HFExport:
    """The directory's contents: config.json (its ids also in generation_config.json, which generate reads),
    the tensors in `dtype` (default: the model's), and the tokenizer; a seq2seq model takes no
    token_type_ids, so the tokenizer does not make them."""
    dtype = dtype or next(model.parameters()).dtype
    config = {**config, "torch_dtype": str(dtype).removeprefix("torch.")}
    generation = {k: v for k, v in config.items() if k.endswith("_token_id") and v is not None}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return HFExport(config, tensors, model.config.context_length, {"generation_config.json": generation},
                    tokenizer_json, specials, {"model_input_names": ["input_ids", "attention_mask"]})


def keep_fresh(cfg, absent: list[str]) -> tuple[str, ...]:
    """BART and Marian: a file without final_logits_bias (a bare model) keeps lmforge's zeros."""
    return ("final_logits_bias",) if absent else ()
