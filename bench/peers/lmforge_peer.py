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
        """How the engine runs its one-token steps here: its backend and why (generate/backend.py)."""
        return f"{self.engine.backend} ({self.engine.backend_reason})"

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


class LmforgeCompiledPeer(LmforgePeer):
    """The same model decoding through `torch.compile` over lmforge's own decode step (the model's
    forward on one token against the preallocated KVCache, positions as symbolic sizes), beside the
    engine's native step: the measurement behind generate/backend.py's "auto" default. Greedy only;
    compilation lands in the first (warm-up) call."""

    name = "lmforge_compiled"

    def __init__(self, shape: Shape, device: torch.device):
        super().__init__(shape, device)
        self.model.eval()
        self.step = torch.compile(self._step, dynamic=True)

    def _step(self, tok, pos, cache):
        return self.model(tok, start_pos=pos, cache=cache)[:, -1]

    def decode_step(self) -> str:
        return "torch.compile over lmforge's static-cache decode step"

    @torch.no_grad()
    def greedy(self, ids, n):
        from lmforge.generate.kv_cache import KVCache

        cache = KVCache.for_model(self.model, ids.size(0), max_len=ids.size(1) + n)
        logits = self.model(ids, cache=cache)[:, -1]  # prefill in eager PyTorch, as the engine does
        cache.advance(ids.size(1))
        out = [ids]
        for i in range(n):
            tok = logits.argmax(-1, keepdim=True)
            out.append(tok)
            if i + 1 < n:
                logits = self.step(tok, cache.pos, cache)
                cache.advance(1)
        return torch.cat(out, dim=1)

    def sample(self, ids, n, temperature, top_k, seed):
        raise NotImplementedError("the compiled-step row is greedy only")
