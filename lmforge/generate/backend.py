"""Which backend runs a model's one-token decode steps: chosen once, when an Engine is made, with
the reason for the choice (`engine.backend`, `engine.backend_reason`).

    native  the compiled C step (generate/cpu/): float32 pre-norm GPT models on the CPU; for an
            encoder-decoder, PyTorch with compiled self-attention over beams' shared histories
    torch   the model's own forward in PyTorch; on the CPU its small products follow the plan
            fast_linear.py measures (PyTorch's or NumPy's BLAS, row- or column-major weights)
    auto    native where it builds and covers the model, else torch

Why a hand-written step rather than torch.compile over lmforge's own KV-cache step: measured side
by side (`python -m bench --only decode-compile --peers lmforge,lmforge_compiled`), batch-1 greedy
on the bench's 6 x 384 GPT on a 2-core CPU, the native step decoded 2.2x as fast as the compiled
step (651 vs 291 tokens/s; eager PyTorch 375), and 4.6x in the quick bench on a busy machine
(bench/results/2026-12-02-cpu-amd-epyc-decode-compile-quick-busy.json). So "auto" stays native.

Asking for a GEMV library (gemv="numpy" or "torch", or LMFORGE_GEMV) asks for the torch backend,
as it always has; LMFORGE_NATIVE=0 keeps "auto" off the native step (generate/environment.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lmforge.errors import LmforgeError
from lmforge.generate.cpu import NativeDecoder, coverage, library
from lmforge.generate.cpu.step import failure
from lmforge.generate.environment import decode_environment
from lmforge.generate.fast_linear import CHOICES, check_choice
from lmforge.generate.seq2seq import is_seq2seq

BACKENDS = ("auto", "native", "torch")
LEGACY = {"numpy": "numpy", "torch": "torch"}  # Engine(cpu_step=...) before backends: the torch backend, that GEMV


@dataclass(frozen=True)
class Choice:
    backend: str  # "native" or "torch"
    gemv: str  # the torch backend's products on the CPU: "auto" (measured), "numpy" or "torch"
    reason: str


def shared_history_unavailable(model: nn.Module) -> str | None:
    """Why an encoder-decoder's decoding cannot use the compiled shared-history attention here."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        return f"the compiled attention runs on the CPU, and the model is on {device}"
    return None if library() is not None else failure()


def native_unavailable(model: nn.Module) -> str | None:
    """Why the compiled step cannot decode `model` here (None when it can). The engine puts the
    model in eval mode before decoding, so its mode does not count. An encoder-decoder's native
    decoding is PyTorch's with one compiled part: self-attention over a cache whose beams share
    their histories (generate/cpu/shared_history.py)."""
    if is_seq2seq(model):
        return shared_history_unavailable(model)
    reason = coverage(model)
    if reason is None and library() is None:
        reason = failure()
    if reason is None:
        try:
            NativeDecoder(model)
        except ValueError as e:
            reason = str(e)
    return reason


def choose(model: nn.Module, backend: str = "auto", gemv: str = "auto") -> Choice:
    """The backend for `model`: `backend` as asked, "auto" resolved, with why."""
    if backend not in BACKENDS:
        raise LmforgeError(f"the decoding backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    check_choice(gemv)
    env = decode_environment()
    if gemv == "auto" and env.gemv:
        gemv = env.gemv
        if backend == "auto":
            return Choice("torch", gemv, f"LMFORGE_GEMV={gemv} asks for PyTorch with {gemv}'s products")
    if backend == "torch":
        return Choice("torch", gemv, "backend='torch' was asked for")
    if backend == "auto" and gemv != "auto":
        return Choice("torch", gemv, f"gemv={gemv!r} asks for PyTorch with {gemv}'s products")
    if backend == "auto" and env.native_off:
        return Choice("torch", gemv, "LMFORGE_NATIVE=0 turns the native step off")
    reason = native_unavailable(model)
    if reason is None:
        why = "backend='native' was asked for" if backend == "native" else "the compiled step covers this model"
        return Choice("native", gemv, why)
    if backend == "native":
        raise LmforgeError(f"backend='native' cannot run here: {reason}; use backend='auto' or 'torch'")
    return Choice("torch", gemv, reason)


__all__ = ["BACKENDS", "CHOICES", "Choice", "choose", "native_unavailable", "shared_history_unavailable"]
