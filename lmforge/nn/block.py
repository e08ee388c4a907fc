"""One Transformer layer: attention then feed-forward, each wrapped in a residual connection.

Pre-norm (GPT-2, Llama):   x = x + Attn(Norm(x));  x = x + FFN(Norm(x))
Post-norm (BERT, 2017):    x = Norm(x + Attn(x));  x = Norm(x + FFN(x))
"""

from __future__ import annotations

from torch import nn

from lmforge.nn.attention import Attention
from lmforge.nn.mlp import MLP, SwiGLU
from lmforge.nn.norms import make_norm


class Block(nn.Module):
    def __init__(self, cfg):  # cfg: lmforge.config.ModelConfig (nn imports only torch)
        super().__init__()
        self.prenorm = cfg.norm_position == "pre"
        self.norm1 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.attn = Attention(cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.causal, cfg.bias, cfg.dropout)
        self.norm2 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        if cfg.activation == "swiglu":
            self.mlp = SwiGLU(cfg.d_model, cfg.d_ff, cfg.bias, cfg.dropout)
        else:
            self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias, cfg.dropout)

    def forward(self, x, rope=None, mask=None, cache=None, need_weights=False):
        if self.prenorm:
            a, w = self.attn(self.norm1(x), rope, mask, cache, need_weights)
            x = x + a
            x = x + self.mlp(self.norm2(x))
        else:
            a, w = self.attn(x, rope, mask, cache, need_weights)
            x = self.norm1(x + a)
            x = self.norm2(x + self.mlp(x))
        return x, w
