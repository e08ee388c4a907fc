"""The compiled decode step now lives in lmforge/generate/cpu/; these names stay importable from here."""

from lmforge.generate.cpu import MAX_ROWS, NativeDecoder, ThreadTuner, library, native_reason

__all__ = ["MAX_ROWS", "NativeDecoder", "ThreadTuner", "library", "native_reason"]
