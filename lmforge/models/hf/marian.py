"""The Hugging Face mapping of Marian (`MarianMTModel`: the Helsinki-NLP opus-mt models), both ways. Its
layers are BART's (see bart.py and encdec.ENCODER_LAYER / DECODER_LAYER); what differs:

    Hugging Face                                          lmforge Seq2Seq
    model.shared.weight                                   tok_emb.weight (source, target, and a tied output)
    (model.{encoder,decoder}.embed_positions.weight)      a fixed sinusoidal table, built, not loaded
    final_logits_bias (1, V)                              final_logits_bias (V,)
    lm_head.weight (absent when tied)                     lm_head.weight

Marian's positions are sinusoidal but laid out in halves, all the sines and then all the cosines
(MarianSinusoidalPositionalEmbedding), where the original paper interleaves them; lmforge builds that
table itself (sinusoidal_layout="halves"), so older checkpoints' stored copies are ignored, as
transformers ignores them. Token embeddings are times sqrt(d_model) (scale_embedding), there is no
norm after the embeddings, and the decoder starts from pad. lmforge has one vocabulary and one
embedding matrix, so a decoder_vocab_size of its own or share_encoder_decoder_embeddings false is refused.
"""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.models.hf import encdec
from lmforge.models.hf.common import unsupported
from lmforge.models.hf.io import HFExport

MODEL_TYPES = {"marian": "Marian"}  # model_type -> the architecture class prefix naming it
FAMILIES, FORMAT = ("seq2seq",), "Marian"
fit_to_weights = encdec.fit_to_weights  # an lm_head in the checkpoint is its own, as in transformers 5
# ModelConfig field -> (config.json key, default), as transformers' MarianConfig names them
KEYS = {"vocab_size": ("vocab_size", 58101), "context_length": ("max_position_embeddings", 1024),
        "n_layer": ("encoder_layers", 12), "n_decoder_layer": ("decoder_layers", 12),
        "n_head": ("encoder_attention_heads", 16), "d_model": ("d_model", 1024), "d_ff": ("encoder_ffn_dim", 4096),
        "dropout": ("dropout", 0.1), "init_std": ("init_std", 0.02), "embed_scale": ("scale_embedding", False),
        "tie_embeddings": ("tie_word_embeddings", True)}
SHAPE = dict(family="seq2seq", position="sinusoidal", sinusoidal_layout="halves", norm="layernorm",
             norm_position="post", norm_eps=1e-5, bias=True, causal=False, embed_norm=False, logits_bias=True)
# fairseq's keys, which older Marian configs carry and transformers ignores: what Marian's layout needs of them
LAYOUT = {"normalize_before": False, "add_final_layer_norm": False, "normalize_embedding": False,
          "static_position_embeddings": True, "add_bias_logits": False}
# the fixed position tables older checkpoints stored
IGNORED = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")


def config_from_hf(hf: dict) -> ModelConfig:
    """A transformers MarianConfig (as a dict) -> the ModelConfig of the same network (its tying settled by
    the checkpoint: fit_to_weights)."""
    encdec.refuse_settings(hf, LAYOUT, "Marian")
    if hf.get("share_encoder_decoder_embeddings", True) is not True:
        raise unsupported("share_encoder_decoder_embeddings=false (an embedding matrix per stack)", "Marian",
                          "a Marian checkpoint")
    if hf.get("decoder_vocab_size") not in (None, hf.get("vocab_size", KEYS["vocab_size"][1])):
        raise unsupported(f"decoder_vocab_size={hf['decoder_vocab_size']!r}, not vocab_size (a vocabulary per stack)",
                          "Marian", "a Marian checkpoint")
    return encdec.fairseq_config(hf, KEYS, SHAPE, "Marian", hf.get("pad_token_id", 58100))


def config_to_hf(cfg: ModelConfig, ids: dict[str, int | None]) -> dict:
    encdec.check_fairseq_shape(cfg, SHAPE, "Marian")
    return {"architectures": ["MarianMTModel"], "model_type": "marian", "decoder_vocab_size": cfg.vocab_size,
            "share_encoder_decoder_embeddings": True, **encdec.fairseq_config_to_hf(cfg, ids)}


def state_dict_from_hf(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and stack) a transformers Marian state dict into our names; an absent final_logits_bias (a
    bare MarianModel) keeps its zeros."""
    return encdec.fairseq_from_hf(hf, cfg, encdec.fairseq_names(cfg), IGNORED, "Marian")


keep_fresh = encdec.keep_fresh  # an absent final_logits_bias keeps its zeros


def export(model: torch.nn.Module, tokenizer_json: str | None, specials: dict[str, tuple[str, int]],
           chat_template: str | list | None = None, end_ids: tuple[int, ...] = (),
           dtype: torch.dtype | None = None) -> HFExport:
    """A Marian-shaped Seq2Seq as a Marian directory's contents (without a tokenizer's pad, pad is the id the
    decoder starts from, as in Marian). An encoder-decoder has no chat template; that is ignored."""
    cfg = model.config
    config = config_to_hf(cfg, encdec.special_ids(cfg, specials, end_ids, "pad"))  # refuses first
    return encdec.export(model, config, encdec.fairseq_to_hf(model, encdec.fairseq_names(cfg)), tokenizer_json,
                         specials, dtype)
