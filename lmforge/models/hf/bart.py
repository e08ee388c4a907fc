"""The Hugging Face mapping of BART (`BartForConditionalGeneration`), both ways ({i} = layer; the layers'
names are encdec.ENCODER_LAYER and DECODER_LAYER, which Marian shares):

    Hugging Face                                          lmforge Seq2Seq
    model.shared.weight                                   tok_emb.weight (source, target, and a tied output)
    model.{encoder,decoder}.embed_positions.weight        {encoder,decoder}.positions.weight (less 2 rows)
    model.{encoder,decoder}.layernorm_embedding.*         {encoder,decoder}.embed_norm.*
    model.encoder.layers.{i}.self_attn.{q,k,v}_proj.*     encoder.blocks.{i}.attn.qkv.*  (rows q|k|v)
    model.encoder.layers.{i}.self_attn.out_proj.*         encoder.blocks.{i}.attn.proj.*
    model.encoder.layers.{i}.self_attn_layer_norm.*       encoder.blocks.{i}.norm1.*  (post-norm: after the sum)
    model.encoder.layers.{i}.fc1.* / fc2.*                encoder.blocks.{i}.mlp.fc.* / mlp.proj.*
    model.encoder.layers.{i}.final_layer_norm.*           encoder.blocks.{i}.norm2.*
    model.decoder.layers.{i}.self_attn*                   decoder.blocks.{i}.attn.* / norm1.*
    model.decoder.layers.{i}.encoder_attn.q_proj.*        decoder.blocks.{i}.cross.q.*
    model.decoder.layers.{i}.encoder_attn.{k,v}_proj.*    decoder.blocks.{i}.cross.kv.*  (rows k|v)
    model.decoder.layers.{i}.encoder_attn.out_proj.*      decoder.blocks.{i}.cross.proj.*
    model.decoder.layers.{i}.encoder_attn_layer_norm.*    decoder.blocks.{i}.norm2.*
    model.decoder.layers.{i}.fc1, fc2, final_layer_norm   decoder.blocks.{i}.mlp.fc, mlp.proj, norm3
    final_logits_bias (1, V)                              final_logits_bias (V,)  (a buffer: zeros if absent)
    lm_head.weight (absent when tied)                     lm_head.weight

BART's position tables have 2 extra leading rows (fairseq kept them for padding), so position p reads
row p + 2: import drops them and export writes zeros there, rows transformers never reads. A bare
BartModel saves its tensors without the `model.` prefix and has no final_logits_bias or lm_head.
"""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.models.hf import encdec
from lmforge.models.hf.io import HFExport

MODEL_TYPES = {"bart": "Bart"}  # model_type -> the architecture class prefix naming it
FAMILIES, FORMAT = ("seq2seq",), "BART"
fit_to_weights = encdec.fit_to_weights  # an lm_head in the checkpoint is its own, as in transformers 5
OFFSET = 2  # BART's position rows before position 0
# ModelConfig field -> (config.json key, default), as transformers' BartConfig names them
KEYS = {"vocab_size": ("vocab_size", 50265), "context_length": ("max_position_embeddings", 1024),
        "n_layer": ("encoder_layers", 12), "n_decoder_layer": ("decoder_layers", 12),
        "n_head": ("encoder_attention_heads", 16), "d_model": ("d_model", 1024), "d_ff": ("encoder_ffn_dim", 4096),
        "dropout": ("dropout", 0.1), "init_std": ("init_std", 0.02), "embed_scale": ("scale_embedding", False),
        "tie_embeddings": ("tie_word_embeddings", True)}
SHAPE = dict(family="seq2seq", position="learned", norm="layernorm", norm_position="post", norm_eps=1e-5, bias=True,
             causal=False, embed_norm=True, logits_bias=True)
# fairseq's keys, which older BART configs carry and transformers ignores: what BART's layout needs of them
LAYOUT = {"normalize_before": False, "add_final_layer_norm": False, "normalize_embedding": True,
          "static_position_embeddings": False, "add_bias_logits": False}
IGNORED = ()  # nothing beyond the stacks' copies of the embedding (encdec.COPIES)
POSITIONS = [([f"model.{s}.embed_positions.weight"], f"{s}.positions.weight") for s in ("encoder", "decoder")]


# --- config -------------------------------------------------------------------------------------------
def config_from_hf(hf: dict) -> ModelConfig:
    """A transformers BartConfig (as a dict) -> the ModelConfig of the same network (its tying settled by the
    checkpoint: fit_to_weights)."""
    encdec.refuse_settings(hf, LAYOUT, "BART")
    return encdec.fairseq_config(hf, KEYS, SHAPE, "BART", 2)


def config_to_hf(cfg: ModelConfig, ids: dict[str, int | None]) -> dict:
    encdec.check_fairseq_shape(cfg, SHAPE, "BART")
    return {"architectures": ["BartForConditionalGeneration"], "model_type": "bart", **encdec.fairseq_config_to_hf(cfg, ids)}


# --- weights --------------------------------------------------------------------------------------------
def _names(cfg: ModelConfig) -> encdec.Names:
    out = encdec.fairseq_names(cfg)
    for stack in ("encoder", "decoder"):
        out += [([f"model.{stack}.layernorm_embedding.{s}"], f"{stack}.embed_norm.{s}") for s in ("weight", "bias")]
    return out


def state_dict_from_hf(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and stack) a transformers BART state dict into our names, dropping the positions' 2 extra rows;
    an absent final_logits_bias (a bare BartModel) keeps its zeros."""
    sd, absent = encdec.fairseq_from_hf(hf, cfg, _names(cfg) + POSITIONS, IGNORED, "BART")
    for _, ours in POSITIONS:
        sd[ours] = sd[ours][OFFSET:]
    return sd, absent


keep_fresh = encdec.keep_fresh  # an absent final_logits_bias keeps its zeros


# --- export ---------------------------------------------------------------------------------------------
def export(model: torch.nn.Module, tokenizer_json: str | None, specials: dict[str, tuple[str, int]],
           chat_template: str | list | None = None, end_ids: tuple[int, ...] = (),
           dtype: torch.dtype | None = None) -> HFExport:
    """A BART-shaped Seq2Seq as a BART directory's contents (without a tokenizer's eos, eos is the id the
    decoder starts from, as in BART). An encoder-decoder has no chat template; that is ignored."""
    cfg = model.config
    config = config_to_hf(cfg, encdec.special_ids(cfg, specials, end_ids, "eos"))  # refuses first
    tensors = encdec.fairseq_to_hf(model, _names(cfg))
    sd = model.state_dict()
    for (hf_name,), ours in POSITIONS:
        table = sd[ours].detach().cpu()
        tensors[hf_name] = torch.cat([table.new_zeros(OFFSET, cfg.d_model), table])
    return encdec.export(model, config, tensors, tokenizer_json, specials, dtype)
