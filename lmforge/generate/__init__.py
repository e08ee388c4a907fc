"""Text generation on token ids (no tokenizer here): logits processors and the sampling loop."""

from lmforge.generate.sampling import generate, process_logits

__all__ = ["generate", "process_logits"]
