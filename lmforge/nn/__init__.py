"""The Transformer as parts, shared by every model family. Imports only torch."""

from lmforge.nn.attention import (Attention, attention_weights, causal_mask, padded_causal_mask,
                                  scaled_dot_product_attention)
from lmforge.nn.block import Block
from lmforge.nn.init import init_weights
from lmforge.nn.mlp import MLP, SwiGLU
from lmforge.nn.norms import RMSNorm, make_norm
from lmforge.nn.positions import LearnedPositions, SinusoidalPositions, apply_rope, rope_cos_sin

__all__ = [
    "Attention", "attention_weights", "causal_mask", "padded_causal_mask", "scaled_dot_product_attention", "Block", "init_weights", "MLP",
    "SwiGLU", "RMSNorm", "make_norm", "LearnedPositions", "SinusoidalPositions", "apply_rope", "rope_cos_sin",
]
