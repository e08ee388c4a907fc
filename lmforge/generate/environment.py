"""The environment variables that steer decoding, read here and nowhere else in lmforge.generate
(the cache folder's LMFORGE_CACHE / XDG_CACHE_HOME are lmforge.io's):

    LMFORGE_NATIVE=0           the "auto" backend never picks the compiled step
    LMFORGE_GEMV=numpy|torch   the "auto" backend decodes in PyTorch, its products through that library
    CC                         the C compiler that builds the compiled step (else cc, gcc or clang)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

GEMVS = ("torch", "numpy")
OFF = ("0", "off", "false", "no")


@dataclass(frozen=True)
class DecodeEnvironment:
    native_off: bool  # LMFORGE_NATIVE turns the compiled step off for "auto"
    gemv: str | None  # LMFORGE_GEMV: the library "auto" asks PyTorch's products to go through
    compiler: str | None  # the C compiler command, None when there is none


def decode_environment() -> DecodeEnvironment:
    gemv = os.environ.get("LMFORGE_GEMV", "").strip().lower()
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return DecodeEnvironment(native_off=os.environ.get("LMFORGE_NATIVE", "1").strip().lower() in OFF,
                             gemv=gemv if gemv in GEMVS else None, compiler=compiler)
