"""Position-wise feed-forward networks.

MLP:     FFN(x) = act(x W_1 + b_1) W_2 + b_2, act = GELU ("gelu" exact, "gelu_tanh" GPT-2's approximation), ReLU
         or SiLU (x sigmoid(x), "swish": Marian's opus-mt models)
SwiGLU:  FFN(x) = (SiLU(x W_gate) * (x W_up)) W_down                   (Shazeer 2020; Llama)
GeGLU:   FFN(x) = (GELU(x W_gate) * (x W_up)) W_down                   (Shazeer 2020; T5 v1.1, tanh GELU)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.nn.dropout import Dropout

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class SwiGLU(nn.Module):
    act = staticmethod(F.silu)

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.gate(x)) * self.up(x)))


class GeGLU(SwiGLU):
    act = staticmethod(ACTIVATIONS["gelu_tanh"])


def make_mlp(cfg) -> nn.Module:
    """The feed-forward network `cfg.activation` names (cfg: lmforge.config.ModelConfig)."""
    if cfg.activation in ("swiglu", "geglu"):
        return (SwiGLU if cfg.activation == "swiglu" else GeGLU)(cfg.d_model, cfg.d_ff, cfg.bias, cfg.dropout)
    return MLP(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias, cfg.dropout)
