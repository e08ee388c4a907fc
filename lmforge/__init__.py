"""lmforge: train, evaluate, sample and understand Transformer language models on your own text."""

__version__ = "0.1.0"


def load(path, device: str = "auto", backend: str = "auto"):
    """`lm = lmforge.load(RUN)` -> an LM with `.generate(prompt, ...)`, `.model`, `.tokenizer`;
    `backend` ("auto", "native", "torch") is how decoding runs (`lm.backend` says which and why)."""
    from lmforge.api import load as _load

    return _load(path, device, backend)


from lmforge.config import GenerateConfig  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402

__all__ = ["load", "GenerateConfig", "LmforgeError", "__version__"]
