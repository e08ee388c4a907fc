"""Decode steps on the CPU: the fastest matrix-vector product for each of the model's weights.

A decode step at batch 1 multiplies one row vector by every weight matrix (a GEMV): it does two
FLOPs per weight it reads, so its speed is how fast the weights stream from memory. How fast that is
depends on who multiplies and on how the matrix lies in memory, and no choice wins everywhere:

- the BLAS inside PyTorch or the OpenBLAS inside NumPy (on some CPUs PyTorch's reaches a third of
  the memory bandwidth on a GEMV while NumPy's reaches most of it);
- `rows`, the (out, in) row-major layout nn.Linear keeps (y_i = W_i . x, one dot product per row),
  or `columns`, the same matrix column-major (y = sum_j x_j W_:,j, a sweep of scaled columns).
  NumPy reads a column-major (out, in) tensor as a Fortran-ordered array, with no copy.

`plan_decode(model)` measures every (who, layout) pair on copies of the model's own weights, in the
order a decode step reads them, and keeps the fastest for each weight shape. `LinearRoutes` carries a
plan out for one generation: it holds its own column-major copies where the plan wants them (made
when the generation starts, so they are never stale) and, while it is entered, routes the nn.Linear
layers of small gradient-free batches through them. The model's parameters are never changed: its
state_dict is the same before and after, and training, saving and export see nothing of decoding.

Integer weights (nn/quantized.py's QuantLinear) are routed too, to the compiled step's own integer
kernel (generate/cpu/decode_step.c's lmf_linear) where the compiler built it: it reads the int8 or
packed int4 values where they lie, so a small batch never makes a float copy of a weight.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SMALL_BATCH = 16  # rows up to which a product counts as matrix-vector work
BACKENDS = ("torch", "numpy")
CHOICES = ("auto", *BACKENDS)
COLUMNS_GAIN = 0.9  # a shape is laid out column-major only when that is at least 10% faster


def _numpy_linear(x: torch.Tensor, w: np.ndarray, b: np.ndarray | None) -> torch.Tensor:
    """y = x W^T + b for x (..., in), W (out, in) as NumPy arrays sharing the tensors' memory."""
    rows = x.reshape(-1, x.size(-1)).numpy()
    y = w @ rows[0] if rows.shape[0] == 1 else rows @ w.T  # GEMV for one row, GEMM for a few
    if b is not None:
        y += b
    return torch.from_numpy(y).view(*x.shape[:-1], w.shape[0])


def check_choice(choice: str) -> None:
    if choice not in CHOICES:
        raise ValueError(f"gemv must be auto, numpy or torch, not {choice!r}")


def is_columns(w: torch.Tensor) -> bool:
    """Whether a 2-D weight is stored column-major (the transpose of a contiguous matrix); a matrix
    with a single row or column is both and counts as row-major."""
    return w.dim() == 2 and min(w.shape) > 1 and w.stride() == (1, w.size(0))


def laid_out(w: torch.Tensor, columns: bool) -> torch.Tensor:
    """`w`'s values stored row-major or column-major: `w` itself when it already is, else a copy."""
    if columns == is_columns(w) and (columns or w.is_contiguous()):
        return w
    return w.t().contiguous().t() if columns else w.contiguous()


@torch.no_grad()
def set_layout(p: torch.Tensor, columns: bool) -> None:
    """Store tensor `p` row-major or column-major in place: same values, other strides. (Decoding
    never calls this on a model's parameters; it keeps copies of its own.)"""
    if columns != is_columns(p):
        p.data = laid_out(p.data, columns)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if type(m) is nn.Linear  # a subclass (a LoRA layer) keeps its own forward
            and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]


@dataclass
class DecodePlan:
    """Who multiplies each weight (by id) in decode steps, and whether from a column-major copy."""
    backend: dict[int, str] = field(default_factory=dict)
    columns: dict[int, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per "shape backend layout": one decode step's GEMVs
    storage: dict[int, int] = field(default_factory=dict)  # id -> data_ptr when planned

    def holds_for(self, linears: list[nn.Linear]) -> bool:
        """The plan covers these very weights (the same tensors on the same memory)."""
        return all(self.storage.get(id(m.weight)) == m.weight.data_ptr() for m in linears)


_PLANS: "weakref.WeakKeyDictionary[nn.Module, DecodePlan]" = weakref.WeakKeyDictionary()


def _time_pass(weights: list[tuple[nn.Linear, torch.Tensor]], backend: str, repeats: int) -> dict[int, float]:
    """Seconds each weight's GEMV takes within passes over all of them in model order (the order and
    the cache state of a decode step), the best of `repeats` passes."""
    best: dict[int, float] = {}
    xs = {m.in_features: torch.full((1, m.in_features), 0.5) for m, _ in weights}  # no draw from the global RNG
    arrays = [(m, w, w.numpy(), None if m.bias is None else m.bias.detach().numpy()) for m, w in weights]
    for r in range(repeats + 1):  # the first pass warms up (and pages in) everything
        for m, w, a, b in arrays:
            x = xs[m.in_features]
            t = time.perf_counter()
            if backend == "numpy":
                _numpy_linear(x, a, b)
            else:
                F.linear(x, w, m.bias)
            if r:
                best[id(m.weight)] = min(best.get(id(m.weight), float("inf")), time.perf_counter() - t)
    return best


_THREADS = threading.local()  # per Python thread: blocks inside it now, and the count its first one saved


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """PyTorch on one thread within the block, the count restored on leaving: in each Python thread
    the first block to enter saves it and the last to leave restores it, however blocks nest or
    interleave there. Per Python thread, because OpenMP keeps the count per calling thread: one
    restored from another thread would not be restored here.

    Why one: PyTorch's idle OpenMP workers spin for a while after each operation, and spinning
    threads beside NumPy's own BLAS threads on the same cores make both many times slower."""
    mine = _THREADS.__dict__
    if mine.get("users", 0) == 0:
        mine["saved"] = torch.get_num_threads()
        torch.set_num_threads(1)
    mine["users"] = mine.get("users", 0) + 1
    try:
        yield
    finally:
        mine["users"] -= 1
        if mine["users"] == 0:
            torch.set_num_threads(mine["saved"])


def _measure(unique: list[nn.Linear], repeats: int) -> dict[tuple[int, str, bool], float]:
    times: dict[tuple[int, str, bool], float] = {}
    with _one_thread():  # as in decode
        for columns in (False, True):
            weights = [(m, laid_out(m.weight.detach(), columns)) for m in unique]  # copies: the model is not touched
            for backend in BACKENDS:
                for key, s in _time_pass(weights, backend, repeats).items():
                    times[key, backend, columns] = s
            del weights
    return times


def plan_decode(model: nn.Module, choice: str = "auto", repeats: int = 3) -> DecodePlan:
    """The plan for `model`'s float32 CPU linears: `choice` "torch" or "numpy" routes all through one
    (row-major, as stored); "auto" measures, on copies of the model's weights, PyTorch and NumPy on
    both layouts and keeps the fastest per weight shape. The plan is kept per model and measured
    again only when its weights are replaced."""
    check_choice(choice)
    linears = _linears(model)
    unique = list({id(m.weight): m for m in linears}.values())  # tied weights are planned once
    storage = {id(m.weight): m.weight.data_ptr() for m in unique}
    if choice != "auto":
        return DecodePlan({id(m.weight): choice for m in unique}, {id(m.weight): False for m in unique}, {}, storage)
    plan = _PLANS.get(model)
    if plan is not None and plan.holds_for(unique):
        return plan
    times = _measure(unique, repeats)
    plan = DecodePlan(storage=storage)
    for shape in {tuple(m.weight.shape) for m in unique}:
        group = [m for m in unique if tuple(m.weight.shape) == shape]
        total = {(b, c): sum(times[id(m.weight), b, c] for m in group) for b in BACKENDS for c in (False, True)}
        rows = min(BACKENDS, key=lambda b: total[b, False])
        cols = min(BACKENDS, key=lambda b: total[b, True])
        columns = min(shape) > 1 and total[cols, True] < COLUMNS_GAIN * total[rows, False]
        for m in group:
            plan.backend[id(m.weight)] = cols if columns else rows
            plan.columns[id(m.weight)] = columns
        plan.seconds.update({f"{shape[0]}x{shape[1]} {b} {'columns' if c else 'rows'}": s for (b, c), s in total.items()})
    _PLANS[model] = plan
    return plan


_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()  # model -> [users, routed]
_LOCK = threading.RLock()


class LinearRoutes:
    """One generation's way of running `model`'s small products: `plan_decode(model, gemv)` carried
    out with this object's own weight arrays (column-major copies where the plan wants them, made
    now, so later changes to the parameters are never missed: build one per generation).

    `with routes.active():` around each decode step routes the nn.Linear layers through them and
    runs PyTorch on one thread; both are undone on leaving, so nothing stays changed between steps
    (a paused stream leaves the model and the thread count as they were). Blocks may nest or
    overlap across threads on one model: the routing is set up by the first to enter and taken down
    by the last to leave."""

    def __init__(self, model: nn.Module, gemv: str = "auto", floats: bool = True):
        self.model = model
        linears = _linears(model) if floats else []  # floats=False: the integer weights' routes alone
        plan = plan_decode(model, gemv) if linears else DecodePlan()
        self.arrays: dict[nn.Module, tuple[np.ndarray, np.ndarray | None]] = {}
        for m in linears:
            if plan.backend.get(id(m.weight)) == "numpy":
                w = laid_out(m.weight.detach(), plan.columns[id(m.weight)])  # the array keeps its tensor alive
                self.arrays[m] = (w.numpy(), None if m.bias is None else m.bias.detach().numpy())
        self.integer = _integer_linears(model)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if not self.arrays and not self.integer:  # PyTorch does it all: nothing to route, threads untouched
            yield
            return
        threads = torch.get_num_threads()  # the compiled kernel's own pool: PyTorch's count before _one_thread
        with _one_thread(), self._routed(threads):
            yield

    @contextlib.contextmanager
    def _routed(self, threads: int) -> Iterator[None]:
        with _LOCK:
            active = _ACTIVE.get(self.model)
            if active is None:
                routed = [m for m, (w, b) in self.arrays.items() if _route(m, w, b)]
                routed += [m for m in self.integer if _route_integer(m, threads)]
                _ACTIVE[self.model] = active = [0, routed]
            active[0] += 1
        try:
            yield
        finally:
            with _LOCK:
                active[0] -= 1
                if active[0] == 0:
                    del _ACTIVE[self.model]
                    for m in active[1]:
                        m.__dict__.pop("forward", None)


@contextlib.contextmanager
def decode_linears(model: nn.Module, enabled: bool = True, gemv: str = "auto") -> Iterator[None]:
    """Within the block, `model`'s float32 CPU nn.Linear layers compute batches of up to SMALL_BATCH
    rows without gradients as `plan_decode(model, gemv)` says (see LinearRoutes); all is restored on
    leaving."""
    if not enabled:
        yield
        return
    with LinearRoutes(model, gemv).active():
        yield


def _integer_linears(model: nn.Module) -> list[nn.Module]:
    """The model's QuantLinear layers the compiled integer kernel takes (none without a compiler)."""
    from lmforge.generate.cpu.step import MAX_GROUPS, library
    from lmforge.nn.quantized import QuantLinear

    found = [m for m in model.modules() if type(m) is QuantLinear and m.qweight.device.type == "cpu"
             and m.in_features // m.group <= MAX_GROUPS]
    return found if found and library() is not None else []


def _route_integer(m: nn.Module, threads: int) -> bool:
    """As _route, for a QuantLinear: small gradient-free float32 batches go to the integer kernel."""
    from lmforge.generate.cpu.step import MAX_ROWS, linear

    if "forward" in m.__dict__:
        return False
    cls_forward = type(m).forward

    def forward(x, m=m):
        if torch.is_grad_enabled() or x.dtype != torch.float32 or x.numel() > MAX_ROWS * x.size(-1):
            return cls_forward(m, x)
        return linear(m, x, threads)

    forward.lmforge_decode_route = True
    m.forward = forward
    return True


def _route(m: nn.Linear, w: np.ndarray, b: np.ndarray | None) -> bool:
    """Give `m` an instance forward (nn.Module.__call__ finds it before the class's) that sends
    small gradient-free float32 batches to NumPy with `w`, `b`; whether it did. A module that
    already has an instance forward (a hook of the user's or of another library) is left as it is."""
    if "forward" in m.__dict__:
        return False

    def forward(x, m=m, w=w, b=b):
        if torch.is_grad_enabled() or x.dtype != torch.float32 or x.numel() > SMALL_BATCH * x.size(-1):
            return F.linear(x, m.weight, m.bias)
        return _numpy_linear(x, w, b)

    forward.lmforge_decode_route = True  # lets generate/cpu/step.py tell this from a user's replaced forward
    m.forward = forward
    return True
