"""Text generation on token ids (no tokenizer here): logits processors, a KV-cache engine, and the
plain re-reading loop kept as the reference the engine is tested against."""

from lmforge.generate.batch import PAD, DecodeState
from lmforge.generate.beam import beam_search
from lmforge.generate.engine import Engine
from lmforge.generate.kv_cache import KVCache
from lmforge.generate.sampling import generate, process_logits

__all__ = ["PAD", "DecodeState", "Engine", "KVCache", "beam_search", "generate", "process_logits"]
