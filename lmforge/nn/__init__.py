"""The Transformer as parts, shared by every model family. Imports only torch."""

from lmforge.nn.attention import (Attention, CrossAttention, attend, attention_weights, causal_mask,
                                  padded_causal_mask, scaled_dot_product_attention)
from lmforge.nn.dropout import Dropout, dropout
from lmforge.nn.block import Block, DecoderBlock
from lmforge.nn.init import init_weights
from lmforge.nn.mlp import MLP, GeGLU, SwiGLU, make_mlp
from lmforge.nn.norms import RMSNorm, make_norm
from lmforge.nn.positions import (LearnedPositions, RelativePositionBias, SinusoidalPositions, apply_rope,
                                  relative_bucket, rope_cos_sin)

__all__ = [
    "Attention", "CrossAttention", "attend", "attention_weights", "causal_mask", "padded_causal_mask",
    "scaled_dot_product_attention", "Block", "DecoderBlock", "Dropout", "dropout", "init_weights", "MLP", "GeGLU", "SwiGLU", "make_mlp",
    "RMSNorm", "make_norm", "LearnedPositions", "RelativePositionBias", "SinusoidalPositions", "apply_rope",
    "relative_bucket", "rope_cos_sin",
]
