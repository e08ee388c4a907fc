"""The tokens every peer trains and decodes on, prepared once per run by the parent process.

tinyshakespeare (../shared/data/tinyshakespeare.txt from the repository root, or --data PATH) is
encoded with a byte-level BPE tokenizer of the model's vocabulary trained by lmforge. If the file is
missing, seeded random ids stand in (the report says so): speed figures are unaffected, loss curves
then only show the model learning the unigram distribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
MAX_TEXT_VOCAB = 8192  # a larger model vocabulary (gpt2's 50257) trains on these ids: a 1 MB text fills no more


def prepare(text_path: Path | None, vocab_size: int, out_dir: Path, seed: int) -> dict:
    """Write tokens.npy into `out_dir`; return a description of where they came from."""
    path = Path(text_path) if text_path else DEFAULT_TEXT
    if path.is_file():
        from lmforge.tokenizer import train_bpe

        text = path.read_text(encoding="utf-8")
        tokenizer = train_bpe([text], vocab_size)
        tokens = np.asarray(tokenizer.encode(text), dtype=np.int64)
        info = {"source": str(path), "kind": f"lmforge byte-level BPE, vocab {tokenizer.vocab_size}",
                "eos_id": tokenizer.eos_id}
    else:
        rng = np.random.default_rng(seed)
        tokens = rng.integers(0, vocab_size, size=1_000_000, dtype=np.int64)
        info = {"source": None, "kind": f"random ids ({path} not found)", "eos_id": None}
    np.save(out_dir / "tokens.npy", tokens)
    info["tokens"] = int(tokens.size)
    info["path"] = str(out_dir / "tokens.npy")
    return info


def load(path: str) -> np.ndarray:
    return np.load(path)


def prompts(tokens: np.ndarray, batch: int, length: int, seed: int) -> torch.Tensor:
    """`batch` prompts of `length` tokens from seeded positions in the text, (batch, length)."""
    starts = np.random.default_rng(seed).integers(0, tokens.size - length, size=batch)
    return torch.from_numpy(np.stack([tokens[s:s + length] for s in starts]).astype(np.int64))
