"""lmforge: `lmforge.models.gpt.GPT` from the gpt-small preset, decoded by the KV-cache `Engine`."""

from __future__ import annotations

import torch

from bench.peers.base import Peer, Shape
from lmforge.config import GenerateConfig, model_config_from_preset
from lmforge.generate import Engine
from lmforge.models.gpt import GPT
from lmforge.objectives.clm import clm_loss


class LmforgePeer(Peer):
    name = "lmforge"

    def __init__(self, shape: Shape, device: torch.device):
        super().__init__(shape, device)
        cfg = model_config_from_preset(
            "gpt-small", n_layer=shape.n_layer, n_head=shape.n_head, d_model=shape.d_model,
            vocab_size=shape.vocab_size, context_length=shape.context_length, dropout=0.0,
            position="learned", norm="layernorm", activation="gelu", bias=True, tie_embeddings=True,
        )
        self.model = GPT(cfg).to(device)
        self.engine = Engine(self.model)

    def decode_step(self) -> str:
        """How the engine runs its one-token steps here: "native" (generate/native.py) or why not."""
        from lmforge.generate.native import native_reason

        if self.device.type != "cpu":
            return "pytorch"
        reason = native_reason(self.model.eval())
        return "native" if reason is None else f"pytorch ({reason})"

    def compile_for_training(self) -> None:
        """As lmforge's trainer does with train.compile: each Transformer layer, not the whole model."""
        from lmforge.train.parallel import CompiledLayers

        CompiledLayers(self.model).on()

    def forward_logits(self, module, x):
        return module(x)

    def loss(self, x, y):
        return clm_loss(self.trainee(), x, y)  # lmforge's own objective

    def _generate(self, ids, n, **sampling):
        """The engine's public `generate`: it returns each row's new tokens as a list."""
        new = self.engine.generate(ids, GenerateConfig(max_new_tokens=n, **sampling))
        return torch.cat([ids, torch.tensor(new, dtype=ids.dtype, device=ids.device)], dim=1)

    def greedy(self, ids, n):
        return self._generate(ids, n, temperature=0.0)

    def sample(self, ids, n, temperature, top_k, seed):
        return self._generate(ids, n, temperature=temperature, top_k=top_k, seed=seed)

    def flops_per_token(self) -> float:
        return float(self.model.flops_per_token())
