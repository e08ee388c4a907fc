"""One Transformer layer: attention then feed-forward, each wrapped in a residual connection.

Pre-norm (GPT-2, Llama, T5):   x = x + Attn(Norm(x));  x = x + FFN(Norm(x))
Post-norm (BERT, 2017, BART):  x = Norm(x + Attn(x));  x = Norm(x + FFN(x))

The decoder layer of an encoder-decoder model (Vaswani et al. 2017, 3.1) puts cross-attention
between the two: masked self-attention over the target so far, attention over the encoder's output,
then the feed-forward network, each a residual branch normed the same way.
"""

from __future__ import annotations

from torch import nn

from lmforge.nn.attention import Attention, CrossAttention
from lmforge.nn.mlp import make_mlp
from lmforge.nn.norms import make_norm


class Block(nn.Module):
    def __init__(self, cfg, causal: bool | None = None):  # cfg: lmforge.config.ModelConfig (nn imports only torch)
        super().__init__()
        self.prenorm = cfg.norm_position == "pre"
        self.norm1 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.attn = Attention(cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.causal if causal is None else causal,
                              cfg.bias, cfg.dropout, cfg.attention_scale, cfg.head_dim)
        self.norm2 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.mlp = make_mlp(cfg)

    def forward(self, x, rope=None, mask=None, cache=None, need_weights=False, position_bias=None):
        if self.prenorm:
            a, w = self.attn(self.norm1(x), rope, mask, cache, need_weights, position_bias)
            x = x + a
            x = x + self.mlp(self.norm2(x))
        else:
            a, w = self.attn(x, rope, mask, cache, need_weights, position_bias)
            x = self.norm1(x + a)
            x = self.norm2(x + self.mlp(x))
        return x, w


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention over the encoder output, feed-forward.

    forward(x, memory_kv, ...) -> (x, (self-attention weights, cross-attention weights))."""

    def __init__(self, cfg):
        super().__init__()
        self.prenorm = cfg.norm_position == "pre"
        self.norm1 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.attn = Attention(cfg.d_model, cfg.n_head, cfg.n_kv_head, True, cfg.bias, cfg.dropout, cfg.attention_scale,
                              cfg.head_dim)
        self.norm2 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.cross = CrossAttention(cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.bias, cfg.dropout, cfg.attention_scale,
                                    cfg.head_dim)
        self.norm3 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.mlp = make_mlp(cfg)

    def forward(self, x, memory_kv, src_mask=None, cache=None, need_weights=False, position_bias=None):
        # src_mask: (B, 1, 1, S) bool, False at source padding; position_bias: the self-attention's (T5)
        if self.prenorm:
            a, w_self = self.attn(self.norm1(x), None, None, cache, need_weights, position_bias)
            x = x + a
            c, w_cross = self.cross(self.norm2(x), memory_kv, src_mask, need_weights)
            x = x + c
            x = x + self.mlp(self.norm3(x))
        else:
            a, w_self = self.attn(x, None, None, cache, need_weights, position_bias)
            x = self.norm1(x + a)
            c, w_cross = self.cross(x, memory_kv, src_mask, need_weights)
            x = self.norm2(x + c)
            x = self.norm3(x + self.mlp(x))
        return x, (w_self, w_cross)
