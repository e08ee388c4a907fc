"""The compiled one-token decode step for the CPU: decode_step.c (the step), layout.py (its structs
and the check that C and Python lay them out alike), build.py (compile, cache, load), tuner.py (how
many threads run it), step.py (the model's weights as the step reads them, and the call)."""

from lmforge.generate.cpu.step import MAX_ROWS, NativeDecoder, coverage, library, native_reason
from lmforge.generate.cpu.tuner import ThreadTuner

__all__ = ["MAX_ROWS", "NativeDecoder", "ThreadTuner", "coverage", "library", "native_reason"]
