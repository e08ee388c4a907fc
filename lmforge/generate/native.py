"""Decode steps on the CPU as one compiled function (native_step.c), for pre-norm GPT models.

At batch 1 a decode step streams every weight from memory once and does ~50 small operations in
between (norms, RoPE, attention over the cache, activations, residual adds). Run one PyTorch call at
a time, those small operations cost as much as the weights: each one starts cold, after the matrix
products have pushed its data out of the caches, and each one pays for dispatch. native_step.c does
the whole step in one parallel region instead: the threads split every product's outputs between
them and meet at a barrier between parts, so between two products there is nothing but a barrier.

The C file is compiled once per machine with the system's C compiler (`cc`, or $CC), for this CPU
(-march=native) and with OpenMP when the compiler has it, and cached under ~/.cache/lmforge/native
($LMFORGE_CACHE moves it). Without a compiler, or for a model shape it does not cover, decoding
runs in PyTorch as before (generate/fast_linear.py); `native_reason()` says why. LMFORGE_NATIVE=0
turns it off.

Prefill stays in PyTorch (its matrix products are large and PyTorch's BLAS is fast at those); the
decode steps write into the same KV cache, so both paths can take turns within one generation.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import nn

from lmforge.generate.fast_linear import SMALL_BATCH, set_layout
from lmforge.nn import MLP, Attention, Block, RMSNorm, SwiGLU

SOURCE = Path(__file__).with_name("native_step.c")
FLAG_SETS = (  # tried in order: the first that compiles is kept
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-march=native", "-fopenmp-simd"],
    ["-O3", "-fopenmp-simd"],
)
NORMS = {"layernorm": 0, "rmsnorm": 1}
MAX_ROWS = SMALL_BATCH  # native_step.c has the same MAX_ROWS
ACTIVATIONS = {"gelu": 0, "gelu_tanh": 1, "relu": 2, "swiglu": 3}
POSITIONS = {"none": 0, "learned": 1, "sinusoidal": 1, "rope": 2}

_ptr = ctypes.POINTER(ctypes.c_float)


class _Layer(ctypes.Structure):
    _fields_ = [(name, _ptr) for name in ("norm1_w", "norm1_b", "qkv_w", "qkv_b", "proj_w", "proj_b", "norm2_w",
                                          "norm2_b", "fc_w", "fc_b", "up_w", "up_b", "out_w", "out_b")]


class _Model(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("n_layer", "d_model", "n_head", "n_kv_head", "head_dim", "d_ff",
                                                  "vocab", "norm", "act", "position")] + [
        ("eps", ctypes.c_float),
        *[(name, _ptr) for name in ("tok_emb", "pos_table", "rope_cos", "rope_sin", "norm_w", "norm_b", "head_w")],
        ("layers", ctypes.POINTER(_Layer)),
    ]


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None
_forked = threading.Event()  # set in a forked child: its OpenMP pool's threads were not copied by fork
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked.set)


def _threads() -> int:
    """PyTorch's thread count; 1 in a forked child (GNU OpenMP's worker threads do not survive a
    fork, and a parallel step there could wait on them forever)."""
    return 1 if _forked.is_set() else torch.get_num_threads()


class ThreadTuner:
    """Chooses how many threads run the step by timing it, because the best count depends on what
    else the machine is doing. On 2 idle cores two threads decode about 1.5x faster than one; with
    another program busy on those cores, the threads' barriers wait on each other's time slices and
    two threads run two to five times slower than one.

    A trial runs a neighbouring count (half or double, within 1..most) for `TRIAL` steps and keeps it
    if its mean step time beats the mean of the last `WINDOW` steps by 10% (means, not medians: the
    steps a busy core stalls are what a slow count costs). A trial stops early once it can no longer
    win, or after 2 steps if it is 25% slower: with busy cores, the first step with more threads
    can take a hundred times its usual time. When trials run:

    - the first trial comes after `SOON` steps (the machine may be busy from the start);
    - each trial that loses doubles the wait for the next (up to `LONGEST` steps), so a settled
      machine pays for trials rarely;
    - with all threads, a trial also comes within `SOON` steps of the window's mean rising 50% above
      the best window seen (another program has started); that wait doubles each time such a trial
      loses, so a machine whose speed merely wanders is not tried over and over;
    - a trial that wins resets the wait: to `SOON` with fewer threads, so that they come back soon
      after the other program ends, and to `LATE` with all of them."""

    TRIAL, WINDOW, SOON, LATE, LONGEST = 16, 32, 32, 512, 4096

    def __init__(self, most: int):
        self.most = self.threads = max(1, most)
        self.interval, self._since = self.SOON, 0
        self._recent: list[float] = []
        self._best: dict[int, float] = {}  # the lowest window mean seen per thread count
        self._slowed = False  # all threads, and the window's mean well above the best
        self._soon = self.SOON  # the wait after a slow-down; doubles with each trial that then loses
        self._trial: list[float] | None = None  # the trial's step times, while one runs
        self._home = self.threads
        self._down = True  # the direction of the next trial
        self._guard = threading.Lock()  # several Python threads may decode at once

    def record(self, seconds: float) -> None:
        """The time of one step just run with `self.threads` threads."""
        if self.most > 1:
            with self._guard:
                self._record(seconds)

    def _record(self, seconds: float) -> None:
        if self._trial is not None:
            self._trial.append(seconds)
            n, spent, mean = len(self._trial), sum(self._trial), self._mean()
            if n == self.TRIAL or spent > 0.9 * self.TRIAL * mean or (n >= 2 and spent > 1.25 * n * mean):
                self._judge()  # done; or it can no longer win, or is clearly losing
            return
        self._recent = (self._recent + [seconds])[-self.WINDOW:]
        self._since += 1
        if len(self._recent) < self.WINDOW:
            return
        mean = self._mean()
        best = self._best[self.threads] = min(self._best.get(self.threads, mean), mean)
        slowed = self.threads == self.most and mean > (1.2 if self._slowed else 1.5) * best
        if slowed and not self._slowed:  # the steps just slowed down: look soon, sooner the less it misled
            self.interval = min(self.interval, self._soon)
        self._slowed = slowed
        if self._since >= self.interval:
            self._start_trial()

    def _start_trial(self) -> None:
        other = max(1, self.threads // 2) if self._down else min(self.most, self.threads * 2)
        if other == self.threads:  # at an end: try the other direction
            self._down = not self._down
            other = max(1, self.threads // 2) if self._down else min(self.most, self.threads * 2)
        self._home, self.threads, self._trial = self.threads, other, []

    def _mean(self) -> float:
        return sum(self._recent) / len(self._recent)

    def _judge(self) -> None:
        trial, self._trial, self._since = self._trial, None, 0
        if len(trial) == self.TRIAL and sum(trial) / len(trial) < 0.9 * self._mean():  # keep the new count
            self._recent, self.interval = trial, self.LATE if self.threads == self.most else self.SOON
            self._soon = self.SOON
        else:
            self.threads, self.interval = self._home, min(self.LONGEST, 2 * self.interval)
            if self._slowed:
                self._soon = min(self.LONGEST, 2 * self._soon)
            self._down = not self._down


_tuners: dict[int, ThreadTuner] = {}  # per thread count allowed: what one decode learns, the next starts from


def _tuner() -> ThreadTuner:
    most = _threads()
    with _lock:
        return _tuners.setdefault(most, ThreadTuner(most))


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE") or Path.home() / ".cache" / "lmforge") / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compile(compiler: str) -> ctypes.CDLL:
    """Compile native_step.c (or find it compiled) for this machine and load it."""
    machine = b"\0".join([SOURCE.read_bytes(), compiler.encode(), platform.machine().encode(), _cpu_flags().encode()])
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(machine + b"\0" + " ".join(flags).encode()).hexdigest()[:16]
        target = cache_dir() / f"decode-{key}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # compile aside, then rename: atomic
                out = Path(tmp) / target.name
                run = subprocess.run([*shlex.split(compiler), *flags, "-shared", "-fPIC", "-o", str(out), str(SOURCE), "-lm"],
                                     capture_output=True, text=True, timeout=120)
                if run.returncode != 0:
                    errors.append(run.stderr.strip().splitlines()[-1:] or [f"exit {run.returncode}"])
                    continue
                os.replace(out, target)
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as e:  # e.g. built with an OpenMP runtime that does not load here
            errors.append([str(e)])
            continue
        lib.lmf_decode_step.restype = ctypes.c_int
        return lib
    raise OSError(f"{compiler} could not compile {SOURCE.name}: {errors[-1][0]}")


def library() -> ctypes.CDLL | None:
    """The compiled decode step, or None when it cannot be built here (native_reason() says why)."""
    global _library, _failure
    with _lock:
        if _library is None and _failure is None:
            compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
            if compiler is None:
                _failure = "no C compiler was found (install gcc or clang, or set CC)"
            else:
                try:
                    _library = _compile(compiler)
                except (OSError, subprocess.SubprocessError) as e:
                    _failure = str(e)
        return _library


def native_reason(model: nn.Module) -> str | None:
    """Why `model` cannot decode natively here, or None when it can."""
    if os.environ.get("LMFORGE_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        return "LMFORGE_NATIVE turns it off"
    cfg = getattr(model, "config", None)
    blocks = getattr(model, "blocks", None)
    if cfg is None or blocks is None or not getattr(cfg, "causal", False) or not hasattr(model, "lm_head"):
        return "the native decode step is for GPT models"
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors if t.is_floating_point()):
        return "the native decode step runs float32 on the CPU"
    if cfg.norm_position != "pre":
        return "the native decode step covers pre-norm models"
    if model.training:
        return "the native decode step is for inference (eval mode)"
    for m in model.modules():
        routed = getattr(m.__dict__.get("forward"), "lmforge_decode_route", False)  # fast_linear's, not a user's
        if ("forward" in m.__dict__ and not routed) or m._forward_hooks or m._forward_pre_hooks:
            return "a module of the model has its forward replaced or hooked"
    if not _plain_parts(model):
        return "the model's parts are not the plain GPT parts the native decode step knows"
    if library() is None:
        return _failure
    return None


def _plain_parts(model: nn.Module) -> bool:
    """Every module the native step reads is exactly the class it knows (not a quantized or
    otherwise swapped-in replacement)."""
    norms = (nn.LayerNorm, RMSNorm)
    if not (type(getattr(model, "tok_emb", None)) is nn.Embedding and type(model.lm_head) is nn.Linear
            and type(getattr(model, "norm", None)) in norms):
        return False
    for b in model.blocks:
        linears = [b.attn.qkv, b.attn.proj, b.mlp.proj] + ([b.mlp.gate, b.mlp.up] if type(b.mlp) is SwiGLU else
                                                           [getattr(b.mlp, "fc", None)])
        if not (type(b) is Block and type(b.attn) is Attention and type(b.mlp) in (MLP, SwiGLU)
                and type(b.norm1) in norms and type(b.norm2) in norms and all(type(x) is nn.Linear for x in linears)):
            return False
    return True


def _f(t: torch.Tensor | None):
    return ctypes.cast(t.data_ptr(), _ptr) if t is not None else None


class NativeDecoder:
    """The model's weights as native_step.c reads them, and the step itself. Build one per decode:
    it holds pointers to the weights as they are now."""

    def __init__(self, model: nn.Module):
        cfg = model.config
        self.lib = library()
        weights = []

        def w(t: torch.Tensor | None, *shape: int):
            if t is None:
                return None
            if t.dim() == 2:
                set_layout(t, False)  # row-major, as nn.Linear keeps it
            t = t.detach()  # this tensor, not the parameter, keeps the memory the pointer names alive
            if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous() or \
                    (shape and tuple(t.shape) != shape):
                raise ValueError(f"the native decode step needs contiguous float32 CPU weights of the config's shapes; "
                                 f"one is {t.dtype} {tuple(t.shape)}")
            weights.append(t)
            return _f(t)

        C, HD, QKV = cfg.d_model, cfg.n_head * cfg.head_dim, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim
        F = model.blocks[0].mlp.proj.in_features
        swiglu = cfg.activation == "swiglu"
        layers = []
        for block in model.blocks:
            a, f = block.attn, block.mlp
            fc, up = (f.gate, f.up) if swiglu else (f.fc, None)
            layers.append(_Layer(
                w(block.norm1.weight, C), w(getattr(block.norm1, "bias", None), C), w(a.qkv.weight, QKV, C),
                w(a.qkv.bias, QKV), w(a.proj.weight, C, HD), w(a.proj.bias, C), w(block.norm2.weight, C),
                w(getattr(block.norm2, "bias", None), C), w(fc.weight, F, C), w(fc.bias, F),
                w(up.weight, F, C) if up else None, w(up.bias, F) if up else None, w(f.proj.weight, C, F),
                w(f.proj.bias, C)))
        self._layers = (_Layer * len(layers))(*layers)
        pos_table = None
        if cfg.position == "learned":
            pos_table = model.pos_emb.weight
        elif cfg.position == "sinusoidal":
            pos_table = model.pos_emb.table
        rope = cfg.position == "rope"
        T, V = cfg.context_length, cfg.vocab_size
        self.model = _Model(
            cfg.n_layer, C, cfg.n_head, cfg.n_kv_head, cfg.head_dim, F, V, NORMS[cfg.norm], ACTIVATIONS[cfg.activation],
            POSITIONS[cfg.position], cfg.norm_eps, w(model.tok_emb.weight, V, C), w(pos_table, T, C),
            w(model.rope_cos if rope else None, T, cfg.head_dim), w(model.rope_sin if rope else None, T, cfg.head_dim),
            w(model.norm.weight, C), w(getattr(model.norm, "bias", None), C), w(model.lm_head.weight, V, C),
            self._layers)
        self.context = T
        self._weights = weights  # kept alive while the pointers are in use
        self._work = None
        self.tuner: ThreadTuner | None = None  # None: the process-wide one for torch's thread count

    def __call__(self, tokens: torch.Tensor, pos: int, npad: torch.Tensor, cache) -> torch.Tensor:
        """Logits (N, V) after `tokens` (N,) at cache slot `pos`; row n's first npad[n] slots are padding.
        Writes this token's keys and values into `cache` at `pos`."""
        m, n = self.model, tokens.numel()
        s = cache[0].k.size(2)
        if n > MAX_ROWS:
            raise ValueError(f"the native decode step takes up to {MAX_ROWS} rows, not {n}; split the batch")
        if pos >= s:
            raise ValueError(f"the KV cache holds {s} positions; {pos + 1} were asked for")
        first = cache[0].k
        if first.shape[0] != n or first.shape[1] != m.n_kv_head or first.shape[3] != m.head_dim or \
                any(t.dtype != torch.float32 or not t.is_contiguous() for layer in cache.layers for t in (layer.k, layer.v)):
            raise ValueError(f"the KV cache does not fit this model and {n} rows; make it with KVCache.for_model")
        least, most = map(int, npad.aminmax()) if npad.numel() == n else (-1, 0)
        if least < 0 or most > pos or pos - least >= self.context:
            raise ValueError(f"padding {npad.tolist()} does not fit slot {pos} of a {self.context}-token context")
        size = n * (2 * m.d_model + (2 * m.n_head + 2 * m.n_kv_head) * m.head_dim + 2 * m.d_ff + m.n_head * s)
        if self._work is None or self._work.numel() < size:
            self._work = torch.empty(size)
        tokens = tokens.to(torch.long).contiguous()
        npad = npad.to(torch.int32).contiguous()
        logits = torch.empty(n, m.vocab)
        ks = (ctypes.c_void_p * len(cache))(*[layer.k.data_ptr() for layer in cache.layers])
        vs = (ctypes.c_void_p * len(cache))(*[layer.v.data_ptr() for layer in cache.layers])
        tuner = self.tuner or _tuner()
        start = time.perf_counter()
        status = self.lib.lmf_decode_step(ctypes.byref(m), n, ctypes.c_void_p(tokens.data_ptr()),
                                          ctypes.c_void_p(npad.data_ptr()), pos, ks, vs, s, _f(logits),
                                          _f(self._work), tuner.threads)
        tuner.record(time.perf_counter() - start)
        if status == -2:
            raise ValueError(f"a token id is outside the vocabulary of {m.vocab}")
        return logits
