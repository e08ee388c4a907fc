"""Named model shapes: `model_config_from_preset("gpt-mini", n_layer=2)`."""

from __future__ import annotations

from typing import Any

from lmforge.config.model import ModelConfig
from lmforge.errors import LmforgeError


_ENCODER = dict(causal=False, norm_position="post", norm_eps=1e-12, activation="gelu", dropout=0.1)
_T5 = dict(causal=False, position="t5", norm="rmsnorm", norm_eps=1e-6, activation="relu", bias=False, dropout=0.1,
           attention_scale=1.0, tied_output_scale=True)

# Named shapes. Tiny ones train on a laptop CPU in minutes; gpt2 / gpt2-medium are the OpenAI shapes
# (124M / 355M); llama-* use RoPE, RMSNorm, SwiGLU and grouped-query attention.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt-micro": dict(n_layer=2, n_head=2, d_model=64, context_length=64),
    "gpt-mini": dict(n_layer=4, n_head=4, d_model=128, context_length=64),  # nanoGPT's CPU shape
    "gpt-small": dict(n_layer=6, n_head=6, d_model=384, context_length=256),
    "gpt2": dict(n_layer=12, n_head=12, d_model=768, context_length=1024, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, d_model=1024, context_length=1024, vocab_size=50257),
    "llama-mini": dict(
        n_layer=4, n_head=8, n_kv_head=2, d_model=256, context_length=256, position="rope",
        norm="rmsnorm", norm_eps=1e-6, activation="swiglu", bias=False, tie_embeddings=False,
    ),
    # Encoders (bidirectional, post-norm, exact GELU, LayerNorm eps 1e-12 as in BERT's checkpoints).
    "bert-mini": dict(family="bert", n_layer=4, n_head=4, d_model=256, context_length=128, **_ENCODER),
    "bert-small": dict(family="bert", n_layer=6, n_head=6, d_model=384, context_length=256, **_ENCODER),
    "bert-base": dict(family="bert", n_layer=12, n_head=12, d_model=768, context_length=512, vocab_size=30522,
                      **_ENCODER),
    "electra-mini": dict(family="electra", n_layer=4, n_head=4, d_model=256, context_length=128, **_ENCODER),
    "electra-small": dict(family="electra", n_layer=12, n_head=4, d_model=256, embedding_size=128, d_ff=1024,
                          context_length=512, vocab_size=30522, **_ENCODER),
    # Encoder-decoder (models/seq2seq.py). t5-*: pre-norm RMSNorm, no biases, relative-bucket positions, no
    # 1/sqrt(d) in attention, tied output scaled by d_model ** -0.5 (t5-small is T5's own 60M shape).
    # transformer-base: Vaswani et al.'s base model (post-norm, sinusoidal, embeddings times sqrt(d_model)).
    # bart-mini: BART's choices (post-norm, learned positions, a norm after the embeddings, GELU) made small.
    "t5-mini": dict(family="seq2seq", n_layer=4, n_head=4, d_model=256, d_ff=1024, context_length=256, **_T5),
    "t5-small": dict(family="seq2seq", n_layer=6, n_head=8, d_model=512, d_ff=2048, context_length=512,
                     vocab_size=32128, **_T5),
    "transformer-base": dict(family="seq2seq", n_layer=6, n_head=8, d_model=512, d_ff=2048, context_length=512,
                             position="sinusoidal", norm_position="post", activation="relu", dropout=0.1,
                             embed_scale=True, causal=False),
    "bart-mini": dict(family="seq2seq", n_layer=3, n_head=4, d_model=256, d_ff=1024, context_length=256,
                      position="learned", norm_position="post", activation="gelu", dropout=0.1, embed_norm=True,
                      logits_bias=True, causal=False),
    "llama-1b": dict(  # the TinyLlama-1.1B shape
        n_layer=22, n_head=32, n_kv_head=4, d_model=2048, d_ff=5632, context_length=2048,
        vocab_size=32000, position="rope", norm="rmsnorm", norm_eps=1e-5, activation="swiglu",
        bias=False, tie_embeddings=False,
    ),
}


def model_config_from_preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise LmforgeError(f"unknown model preset {name!r}; use one of {', '.join(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})
