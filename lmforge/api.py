"""The Python front door: `lm = lmforge.load(RUN)`; `lm.generate("prompt")`; `lm.model`, `lm.tokenizer`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from lmforge.errors import LmforgeError
from lmforge.generate import Engine
from lmforge.runtime import pick_device
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import load_checkpoint


class LM:
    """A trained model with its tokenizer, ready to generate text and score it."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, path: Path | None = None):
        self.model, self.tokenizer, self.path = model, tokenizer, path

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt) if prompt else []
        context = self.config.context_length
        if len(ids) > context:
            raise LmforgeError(
                f"the prompt is {len(ids)} tokens, longer than the model's context of {context}; shorten the prompt"
            )
        return ids or [self.tokenizer.eos_id]  # an empty prompt starts a new document

    def generate(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop_at_eos: bool = True) -> str:
        """The continuation of `prompt` (the prompt itself is not repeated). temperature 0 is greedy."""
        new = list(self._new_ids(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos))
        return self.tokenizer.decode(new)

    def stream(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop_at_eos: bool = True) -> Iterator[str]:
        """The continuation of `prompt` as pieces of text, each yielded as soon as it is decodable
        (a byte-level token can end inside a multi-byte character, which waits for the next token)."""
        new: list[int] = []
        shown = ""
        for tok in self._new_ids(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos):
            new.append(tok)
            text = self.tokenizer.decode(new)
            if text.endswith("\ufffd"):  # an incomplete character: wait for its remaining bytes
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
                shown = text
        text = self.tokenizer.decode(new)
        if len(text) > len(shown):
            yield text[len(shown):]

    def _new_ids(self, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos) -> Iterator[int]:
        x = torch.tensor([self.encode_prompt(prompt)], device=self.device)
        for tok in Engine(self.model).stream(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                             seed=seed, eos_id=self.tokenizer.eos_id if stop_at_eos else None):
            yield int(tok[0])

    def __repr__(self) -> str:
        c = self.config
        return (f"LM({self.path}, family={c.family}, layers={c.n_layer}, d_model={c.d_model}, "
                f"vocab={c.vocab_size}, params={self.model.num_params():,})")


def load(path: str | Path, device: str = "auto") -> LM:
    """Load a run directory (config.json + model.safetensors + tokenizer.json)."""
    model, tokenizer = load_checkpoint(path, pick_device(device))
    return LM(model, tokenizer, Path(path))
