"""The Hugging Face mapping of T5 (`T5ForConditionalGeneration`, v1.0 and v1.1), both ways. Each stack's
relative-position bias lives in its layer 0 and serves all its layers ({i} = layer):

    Hugging Face                                                    lmforge Seq2Seq
    shared.weight                                                   tok_emb.weight
    encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight  encoder.rel_bias.weight  (buckets, heads)
    encoder.block.{i}.layer.0.layer_norm.weight                     encoder.blocks.{i}.norm1.weight
    encoder.block.{i}.layer.0.SelfAttention.{q,k,v}.weight          encoder.blocks.{i}.attn.qkv.weight  (rows q|k|v)
    encoder.block.{i}.layer.0.SelfAttention.o.weight                encoder.blocks.{i}.attn.proj.weight
    encoder.block.{i}.layer.1.layer_norm.weight                     encoder.blocks.{i}.norm2.weight
    encoder.block.{i}.layer.1.DenseReluDense.wi.weight              encoder.blocks.{i}.mlp.fc.weight
      (gated: wi_0, the activated one, and wi_1)                      (mlp.gate and mlp.up)
    encoder.block.{i}.layer.1.DenseReluDense.wo.weight              encoder.blocks.{i}.mlp.proj.weight
    encoder.final_layer_norm.weight                                 encoder.norm.weight
    decoder.*: the same, layer.1 being cross-attention:             decoder.* (its own causal rel_bias)
    decoder.block.{i}.layer.1.layer_norm.weight                     decoder.blocks.{i}.norm2.weight
    decoder.block.{i}.layer.1.EncDecAttention.q.weight              decoder.blocks.{i}.cross.q.weight
    decoder.block.{i}.layer.1.EncDecAttention.{k,v}.weight          decoder.blocks.{i}.cross.kv.weight  (rows k|v)
    decoder.block.{i}.layer.1.EncDecAttention.o.weight              decoder.blocks.{i}.cross.proj.weight
    decoder.block.{i}.layer.2.*  (layer norm, feed-forward)         decoder.blocks.{i}.norm3 / mlp.*
    lm_head.weight (absent when tied)                               lm_head.weight

T5 has no biases, RMSNorm (layer_norm_epsilon), no 1/sqrt(d) on the scores (attention_scale=1: it is
in W_q) and, in v1.0, decoder states times d_model**-0.5 before the tied lm_head; v1.1
(feed_forward_proj gated-gelu, tie_word_embeddings false) has its own lm_head, unscaled.
transformers 5 writes tie_word_embeddings true whatever the model and says whether it scales in
scale_decoder_outputs; an lm_head in the checkpoint is its own (encdec.fit_to_weights), and one T5
would scale is loaded with the scale folded in. mT5 (model_type mt5) is v1.1's shape and never scales.
T5 has no position limit: context_length is n_positions where config.json has it (older ones do), else
512, the length T5 was pretrained at.
"""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.hf import encdec
from lmforge.models.hf.common import read_values, unsupported
from lmforge.models.hf.io import HFExport

MODEL_TYPES = {"t5": "T5", "mt5": "MT5"}  # model_type -> the architecture class prefix naming it (mT5: T5 v1.1's shape)
FAMILIES, FORMAT = ("seq2seq",), "T5"
fit_to_weights = encdec.fit_to_weights  # an lm_head in the checkpoint is its own, as in transformers 5
# ModelConfig field -> (config.json key, default), as transformers' T5Config names them
KEYS = {"vocab_size": ("vocab_size", 32128), "d_model": ("d_model", 512), "d_ff": ("d_ff", 2048),
        "n_layer": ("num_layers", 6), "n_decoder_layer": ("num_decoder_layers", None), "n_head": ("num_heads", 8),
        "relative_buckets": ("relative_attention_num_buckets", 32),
        "relative_max_distance": ("relative_attention_max_distance", 128), "dropout": ("dropout_rate", 0.1),
        "norm_eps": ("layer_norm_epsilon", 1e-6), "context_length": ("n_positions", 512)}
GATED_PROJ = {"gelu": "geglu", "gelu_new": "geglu", "gelu_pytorch_tanh": "geglu", "silu": "swiglu", "swish": "swiglu"}
SHAPE = dict(position="t5", norm="rmsnorm", norm_position="pre", bias=False, causal=False)
COPIES = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]  # of shared.weight, which must be the same
IGNORED = (*COPIES, "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")  # one T5 never used


# --- config -------------------------------------------------------------------------------------------
def activation(proj) -> str:
    """feed_forward_proj ("relu", "gated-gelu", ...) -> lmforge's activation. T5 reads gated-gelu as the
    tanh GELU (T5 v1.1's), as lmforge's geglu is."""
    parts = proj.split("-") if isinstance(proj, str) else []
    if len(parts) == 2 and parts[0] == "gated" and parts[1] in GATED_PROJ:
        return GATED_PROJ[parts[1]]
    if len(parts) == 1 and parts[0] in encdec.PLAIN:
        return encdec.PLAIN[parts[0]]
    names = ", ".join([*encdec.PLAIN, *(f"gated-{g}" for g in GATED_PROJ)])
    raise unsupported(f"feed_forward_proj={proj!r} (supported: {names})", "T5", "a plain T5 checkpoint")


def config_from_hf(hf: dict) -> ModelConfig:
    """A transformers T5Config (as a dict) -> the ModelConfig of the same network; its tying is settled
    by the checkpoint (fit_to_weights)."""
    values = read_values(hf, KEYS)
    d_kv = hf.get("d_kv", 64)
    if d_kv != values["d_model"] // values["n_head"] or values["d_model"] % values["n_head"]:
        raise LmforgeError(f"this Hugging Face T5 has d_kv={d_kv!r} with num_heads={values['n_head']} and d_model="
                           f"{values['d_model']}, which lmforge cannot express (its heads split d_model, so d_kv * "
                           "num_heads must equal d_model); convert a T5 checkpoint where they match")
    tied = hf.get("tie_word_embeddings", True) is not False
    # transformers 5 says so; before, tying implied it (mT5 never scales in transformers 5; its checkpoints untie)
    scale = hf.get("scale_decoder_outputs", tied and hf.get("model_type") != "mt5")
    if not isinstance(scale, bool):
        raise LmforgeError(f"config.json's scale_decoder_outputs={scale!r} must be true or false")
    start = encdec.token_id(hf, "decoder_start_token_id", hf.get("pad_token_id", 0), values["vocab_size"])
    return ModelConfig(family="seq2seq", **values, **SHAPE, activation=activation(hf.get("feed_forward_proj", "relu")),
                       attention_scale=1.0, tie_embeddings=tied, tied_output_scale=scale, decoder_start_id=start)


def check_shape(cfg: ModelConfig) -> None:
    encdec.require(cfg, {**SHAPE, "family": "seq2seq", "n_kv_head": cfg.n_head, "embed_scale": False,
                         "embed_norm": False, "logits_bias": False}, "T5")


def config_to_hf(cfg: ModelConfig, ids: dict[str, int | None]) -> dict:
    """T5's config.json; tie_word_embeddings true means a tied, scaled output in every transformers version,
    so a tied model that does not scale is written untied (with lm_head a copy of the embedding)."""
    check_shape(cfg)
    gated = {"geglu": "gated-gelu", "swiglu": "gated-silu"}
    scaled = cfg.tie_embeddings and cfg.tied_output_scale
    return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": cfg.vocab_size,
            "d_model": cfg.d_model, "d_kv": cfg.head_dim, "d_ff": cfg.d_ff, "num_layers": cfg.n_layer,
            "num_decoder_layers": cfg.n_decoder_layer, "num_heads": cfg.n_head,
            "relative_attention_num_buckets": cfg.relative_buckets,
            "relative_attention_max_distance": cfg.relative_max_distance, "dropout_rate": cfg.dropout,
            "layer_norm_epsilon": cfg.norm_eps, "feed_forward_proj": gated.get(cfg.activation) or encdec.TO_HF[cfg.activation],
            "tie_word_embeddings": scaled, "scale_decoder_outputs": scaled, "n_positions": cfg.context_length,
            "is_encoder_decoder": True, "initializer_factor": 1.0, **ids}


# --- weights --------------------------------------------------------------------------------------------
def _names(cfg: ModelConfig, untied: bool) -> encdec.Names:
    gated = cfg.activation in ("geglu", "swiglu")
    ffn = [("DenseReluDense.wi_0", "mlp.gate"), ("DenseReluDense.wi_1", "mlp.up")] if gated else \
        [("DenseReluDense.wi", "mlp.fc")]
    ffn += [("DenseReluDense.wo", "mlp.proj")]

    def stacked(prefix: str, parts: str) -> str:
        return "|".join(f"{prefix}.{p}" for p in parts)

    attn = [("layer.0.layer_norm", "norm1"), (stacked("layer.0.SelfAttention", "qkv"), "attn.qkv"),
            ("layer.0.SelfAttention.o", "attn.proj")]
    enc = attn + [("layer.1.layer_norm", "norm2")] + [(f"layer.1.{h}", m) for h, m in ffn]
    dec = attn + [("layer.1.layer_norm", "norm2"), ("layer.1.EncDecAttention.q", "cross.q"),
                  (stacked("layer.1.EncDecAttention", "kv"), "cross.kv"), ("layer.1.EncDecAttention.o", "cross.proj"),
                  ("layer.2.layer_norm", "norm3")] + [(f"layer.2.{h}", m) for h, m in ffn]
    out = [(["shared.weight"], "tok_emb.weight")]
    for stack, layers, parts in (("encoder", cfg.n_layer, enc), ("decoder", cfg.n_decoder_layer, dec)):
        out += [([f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], f"{stack}.rel_bias.weight"),
                ([f"{stack}.final_layer_norm.weight"], f"{stack}.norm.weight")]
        out += encdec.layers(f"{stack}.block.{{i}}.", stack, layers, parts, ("weight",))
    return out + ([(["lm_head.weight"], "lm_head.weight")] if untied else [])


def state_dict_from_hf(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and stack) a transformers T5 state dict into our names; nothing is optional."""
    sd, used = encdec.from_hf(hf, _names(cfg, not cfg.tie_embeddings), lambda n: n)
    encdec.check_copies(hf, COPIES, sd["tok_emb.weight"], "T5")
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    elif cfg.tied_output_scale:  # an untied lm_head that T5 reads scaled: fold the scale into it
        sd["lm_head.weight"] = sd["lm_head.weight"] * cfg.d_model ** -0.5
    encdec.refuse_extra(hf, used, IGNORED, "T5")
    return sd, []


def keep_fresh(cfg: ModelConfig, absent: list[str]) -> tuple[str, ...]:
    return ()


# --- export ---------------------------------------------------------------------------------------------
def export(model: torch.nn.Module, tokenizer_json: str | None, specials: dict[str, tuple[str, int]],
           chat_template: str | list | None = None, end_ids: tuple[int, ...] = (),
           dtype: torch.dtype | None = None) -> HFExport:
    """A T5-shaped Seq2Seq as a T5 directory's contents; a score scale other than T5's 1 is folded into W_q.
    An encoder-decoder has no chat template; that is ignored."""
    cfg = model.config
    config = config_to_hf(cfg, encdec.special_ids(cfg, specials, end_ids, "pad"))  # refuses first
    tensors = encdec.to_hf(model.state_dict(), _names(cfg, untied=not config["tie_word_embeddings"]))
    encdec.fold_scale(tensors, cfg, 1.0, (".q.weight",))
    return encdec.export(model, config, tensors, tokenizer_json, specials, dtype)
