"""nanoGPT: Karpathy's `model.py`, loaded from a checkout the user points to (never vendored here).

Its `generate` has no KV cache and always samples; greedy decoding is `generate(top_k=1)`, which
keeps only the argmax before sampling. Its training path is `model(x, targets)`, which returns the
loss it computes itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import torch

from bench.peers.base import Peer, Shape


def find_model_py(path: str | None) -> Path | None:
    """`--nanogpt PATH` (a folder holding model.py, or the file), else $NANOGPT_DIR, else None."""
    path = path or os.environ.get("NANOGPT_DIR")
    if not path:
        return None
    p = Path(path).expanduser()
    p = p / "model.py" if p.is_dir() else p
    return p if p.is_file() else None


def load_module(model_py: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NanoGPTPeer(Peer):
    name = "nanogpt"

    def __init__(self, shape: Shape, device: torch.device, model_py: Path):
        super().__init__(shape, device)
        ng = load_module(model_py)
        cfg = ng.GPTConfig(block_size=shape.context_length, vocab_size=shape.vocab_size, n_layer=shape.n_layer,
                           n_head=shape.n_head, n_embd=shape.d_model, dropout=0.0, bias=True)
        with contextlib.redirect_stdout(sys.stderr):  # it prints its parameter count
            self.model = ng.GPT(cfg).to(device)

    def forward_logits(self, module, x):
        return module(x, torch.zeros_like(x))[0]  # with targets it returns logits at every position

    def loss(self, x, y):
        return self.trainee()(x, y)[1]  # nanoGPT's own loss

    def greedy(self, ids, n):
        return self.model.eval().generate(ids, n, temperature=1.0, top_k=1)

    def sample(self, ids, n, temperature, top_k, seed):
        torch.manual_seed(seed)
        return self.model.eval().generate(ids, n, temperature=temperature, top_k=top_k)
