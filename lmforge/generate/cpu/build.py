"""Building and loading the compiled step (decode_step.c, with shared_history.c beside it in one
library): once per machine, cached, checked.

The C files are compiled with the system's C compiler for this CPU (-march=native) and with OpenMP
when the compiler has it, into `lmforge.io.cache_dir()/native`, named by a hash of the sources, the
compiler, the machine and the flags. What is loaded from there must be ours alone: a folder or a
library that another user owns, or that group or others may write, is never loaded (a library is
code run in this process); the step is then built in a private 0700 folder instead. A cached library
that fails to load is built again. A compile runs in its own `.build-<pid>-*` folder and is renamed
into place; folders left by a killed compile (their process gone) are removed by the next build.
Loading ends with the struct-layout check (layout.py): a mismatch is a reason not to use the step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from lmforge import io
from lmforge.errors import LmforgeError
from lmforge.generate.cpu.layout import FloatPtr, Model, Weight, layout_mismatch

SOURCES = [Path(__file__).with_name(name) for name in ("decode_step.c", "products.c", "shared_history.c")]
HEADERS = [Path(__file__).with_name("products.h")]
FLAG_SETS = (  # tried in order: the first that compiles and loads is kept
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-march=native", "-fopenmp-simd"],
    ["-O3", "-fopenmp-simd"],
)
BUILD_PREFIX = ".build-"
STALE_SECONDS = 600  # an unnamed temp folder older than this is a compile that will not finish


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _ours(st: os.stat_result) -> bool:
    """Owned by this user and writable by no one else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _shared_folder() -> Path | None:
    """The cache's folder for compiled steps, or None when it is not ours alone (or cannot be made)."""
    try:
        folder = io.cache_dir() / "native"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder if _ours(os.stat(folder)) else None
    except (OSError, LmforgeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def sweep(folder: Path) -> None:
    """Remove the build folders of compiles whose process is gone (killed mid-compile), and temp
    folders of earlier versions that are long stale."""
    for entry in folder.iterdir():
        name = entry.name
        try:
            if name.startswith(BUILD_PREFIX):
                pid = name[len(BUILD_PREFIX):].split("-", 1)[0]
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
            elif name.startswith("tmp") and entry.is_dir() and time.time() - entry.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _compile(compiler: str, flags: list[str], target: Path) -> None:
    """Compile into a build folder of this process, then rename onto `target` (atomic)."""
    build = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{os.getpid()}-", dir=target.parent))
    try:
        out = build / target.name
        run = subprocess.run([*shlex.split(compiler), *flags, "-shared", "-fPIC", "-o", str(out), *map(str, SOURCES), "-lm"],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise OSError((run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1])
        os.replace(out, target)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _trusted_file(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _ours(st)


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    step = lib.lmf_decode_step  # int lmf_decode_step(Model*, N, tokens, npad, pos, k_cache, v_cache, S, logits, work, threads)
    step.restype = ctypes.c_int
    step.argtypes = [ctypes.POINTER(Model), ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                     ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, FloatPtr, FloatPtr,
                     ctypes.c_int]
    product = lib.lmf_linear  # int lmf_linear(Weight*, bias, N, in, out, O, K, threads)
    product.restype = ctypes.c_int
    product.argtypes = [ctypes.POINTER(Weight), FloatPtr, ctypes.c_int, FloatPtr, FloatPtr, ctypes.c_int, ctypes.c_int,
                        ctypes.c_int]
    attend = lib.lmf_shared_history_attention  # (N, H, G, D, keys, slots, q, k, v, owner, owner_stride, lengths, bias, scale, y, threads)
    attend.restype = ctypes.c_int
    attend.argtypes = [ctypes.c_int] * 6 + [ctypes.c_void_p] * 4 + [ctypes.c_longlong] + [ctypes.c_void_p] * 2 + \
        [ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    return lib


def _load_or_build(compiler: str, flags: list[str], folder: Path, machine: bytes) -> ctypes.CDLL:
    key = hashlib.sha256(machine + b"\0" + " ".join(flags).encode()).hexdigest()[:16]
    target = folder / f"decode-{key}.so"
    if _trusted_file(target):
        try:
            return _open(target)
        except OSError:
            pass  # truncated or foreign: build it again below
    _compile(compiler, flags, target)
    return _open(target)


def build(compiler: str) -> ctypes.CDLL:
    """The compiled step for this machine, from the cache or freshly built, its layout checked."""
    machine = b"\0".join([*(f.read_bytes() for f in SOURCES + HEADERS), compiler.encode(), platform.machine().encode(), _cpu_flags().encode()])
    shared = _shared_folder()
    folder = shared or Path(tempfile.mkdtemp(prefix="lmforge-native-"))  # mkdtemp: 0700, ours alone
    errors = []
    try:
        sweep(folder)
        for flags in FLAG_SETS:
            try:
                lib = _load_or_build(compiler, flags, folder, machine)
            except (OSError, subprocess.SubprocessError) as e:  # e.g. no OpenMP, or its runtime does not load
                errors.append(str(e))
                continue
            mismatch = layout_mismatch(lib)
            if mismatch:
                raise OSError(mismatch)
            return lib
    finally:
        if shared is None:  # loaded libraries stay mapped once their file is gone
            shutil.rmtree(folder, ignore_errors=True)
    raise OSError(f"{compiler} could not compile {', '.join(f.name for f in SOURCES)}: {errors[-1]}")
