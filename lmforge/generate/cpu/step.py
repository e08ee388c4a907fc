"""Decode steps on the CPU as one compiled function (decode_step.c), for pre-norm GPT models.

At batch 1 a decode step streams every weight from memory once and does ~50 small operations in
between (norms, RoPE, attention over the cache, activations, residual adds). Run one PyTorch call at
a time, those small operations cost as much as the weights: each one starts cold, after the matrix
products have pushed its data out of the caches, and each one pays for dispatch. decode_step.c does
the whole step in one parallel region instead: the threads split every product's outputs between
them and meet at a barrier between parts, so between two products there is nothing but a barrier.

build.py compiles it once per machine; without a compiler, or for a model it does not cover, the
engine decodes in PyTorch (generate/backend.py says which runs and why). Prefill stays in PyTorch
(its matrix products are large and PyTorch's BLAS is fast at those); the decode steps write into the
same KV cache, so both paths can take turns within one generation.
"""

from __future__ import annotations

import ctypes
import subprocess
import threading
import time

import torch
from torch import nn

from lmforge.generate.cpu import build
from lmforge.generate.cpu.layout import FloatPtr, Layer, Model, Weight
from lmforge.generate.cpu.tuner import ThreadTuner, shared_tuner
from lmforge.generate.environment import decode_environment
from lmforge.nn import MLP, Attention, Block, RMSNorm, SwiGLU
from lmforge.nn.quantized import QuantLinear

NORMS = {"layernorm": 0, "rmsnorm": 1}
MAX_ROWS = 16  # products.h has the same MAX_ROWS
MAX_GROUPS = 1024  # and the same MAX_GROUPS: int4 groups per row
ACTIVATIONS = {"gelu": 0, "gelu_tanh": 1, "relu": 2, "swiglu": 3}
POSITIONS = {"none": 0, "learned": 1, "sinusoidal": 1, "rope": 2}

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None


def library() -> ctypes.CDLL | None:
    """The compiled decode step, or None when it cannot be built here (`failure()` says why)."""
    global _library, _failure
    with _lock:
        if _library is None and _failure is None:
            compiler = decode_environment().compiler
            if compiler is None:
                _failure = "no C compiler was found (install gcc or clang, or set CC)"
            else:
                try:
                    _library = build.build(compiler)
                except (OSError, subprocess.SubprocessError) as e:
                    _failure = str(e)
        return _library


def failure() -> str | None:
    return _failure


def reset() -> None:
    """Forget the loaded step and its failure, so that the next use builds or finds it again."""
    global _library, _failure
    with _lock:
        _library = _failure = None


def native_reason(model: nn.Module) -> str | None:
    """Why `model` cannot decode natively here, or None when it can."""
    if model.training:
        return "the native decode step is for inference (eval mode)"
    return coverage(model) or (None if library() is not None else _failure)


def coverage(model: nn.Module) -> str | None:
    """Why the compiled step does not cover `model` (its kind, dtype, device, parts), or None."""
    cfg = getattr(model, "config", None)
    blocks = getattr(model, "blocks", None)
    if cfg is None or blocks is None or not getattr(cfg, "causal", False) or not hasattr(model, "lm_head"):
        return "the native decode step is for GPT models"
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors if t.is_floating_point()):
        return "the native decode step runs float32 on the CPU"
    if cfg.norm_position != "pre":
        return "the native decode step covers pre-norm models"
    if cfg.activation not in ACTIVATIONS:
        return f"the native decode step covers the {', '.join(ACTIVATIONS)} activations"
    for m in model.modules():
        routed = getattr(m.__dict__.get("forward"), "lmforge_decode_route", False)  # fast_linear's, not a user's
        if ("forward" in m.__dict__ and not routed) or m._forward_hooks or m._forward_pre_hooks:
            return "a module of the model has its forward replaced or hooked"
    if not _plain_parts(model):
        return "the model's parts are not the plain GPT parts the native decode step knows"
    if any(isinstance(m, QuantLinear) and m.bits == 4 and m.in_features // m.group > MAX_GROUPS for m in model.modules()):
        return f"the native decode step takes up to {MAX_GROUPS} int4 groups per row; quantise with a larger --group-size"
    return None


def _plain_parts(model: nn.Module) -> bool:
    """Every module the native step reads is exactly the class it knows (not a quantized or
    otherwise swapped-in replacement)."""
    norms, linear = (nn.LayerNorm, RMSNorm), (nn.Linear, QuantLinear)
    if not (type(getattr(model, "tok_emb", None)) is nn.Embedding and type(model.lm_head) in linear
            and type(getattr(model, "norm", None)) in norms):
        return False
    for b in model.blocks:
        linears = [b.attn.qkv, b.attn.proj, b.mlp.proj] + ([b.mlp.gate, b.mlp.up] if type(b.mlp) is SwiGLU else
                                                           [getattr(b.mlp, "fc", None)])
        if not (type(b) is Block and type(b.attn) is Attention and type(b.mlp) in (MLP, SwiGLU)
                and type(b.norm1) in norms and type(b.norm2) in norms and all(type(x) in linear for x in linears)):
            return False
    return True


def _f(t: torch.Tensor | None):
    return ctypes.cast(t.data_ptr(), FloatPtr) if t is not None else None


def weight_struct(m: nn.Module, keep: list[torch.Tensor]) -> Weight:
    """A Linear's or QuantLinear's weight as products.h's Weight; the tensors whose memory it names
    are appended to `keep` (they must outlive the struct)."""
    if type(m) is nn.Linear:
        w = m.weight.detach().contiguous()
        keep.append(w)
        return Weight(f=_f(w), group=m.in_features)
    parts = [m.qweight.contiguous(), m.scales.contiguous(), None if m.zeros is None else m.zeros.contiguous()]
    keep += [t for t in parts if t is not None]
    q, scale, zero = parts
    return Weight(q8=q.data_ptr() if m.bits == 8 else None, q4=q.data_ptr() if m.bits == 4 else None,
                  scale=_f(scale), zero=_f(zero), group=m.group)


def rounds_inputs(m: QuantLinear) -> bool:
    """Whether the compiled kernel rounds m's inputs to bfloat16 inside its products: int4 with groups of
    a multiple of 64, on a CPU with AVX512-BF16 (products.c, lmf_bf16_path)."""
    lib = library()
    return lib is not None and bool(lib.lmf_features() & 1) and m.bits == 4 and m.group % 64 == 0


def linear(m: QuantLinear, x: torch.Tensor, threads: int) -> torch.Tensor:
    """y = x W^T + b for up to MAX_ROWS float32 rows, the integers read by the compiled kernel."""
    lib = library()
    keep: list[torch.Tensor] = []
    W = weight_struct(m, keep)
    flat = x.reshape(-1, m.in_features).contiguous()
    out = torch.empty(flat.shape[0], m.out_features)
    bias = None if m.bias is None else m.bias.detach().contiguous()
    lib.lmf_linear(ctypes.byref(W), _f(bias), flat.shape[0], _f(flat), _f(out), m.out_features, m.in_features, threads)
    return out.view(*x.shape[:-1], m.out_features)


class NativeDecoder:
    """The model's weights as decode_step.c reads them, and the step itself. Build one per decode:
    it holds pointers to the weights as they are now."""

    def __init__(self, model: nn.Module):
        cfg = model.config
        self.lib = library()
        weights = []

        def product(m: nn.Module, *shape: int) -> Weight:
            got = (m.out_features, m.in_features)
            if got != shape or (type(m) is nn.Linear and (m.weight.dtype != torch.float32 or m.weight.device.type != "cpu")):
                raise ValueError(f"the native decode step needs float32 CPU weights of the config's shapes; one is {got}")
            return weight_struct(m, weights)

        def w(t: torch.Tensor | None, *shape: int):
            if t is None:
                return None
            t = t.detach()  # this tensor, not the parameter, keeps the memory the pointer names alive
            if not t.is_contiguous():  # e.g. a weight someone stored column-major: read a row-major copy
                t = t.contiguous()
            if t.dtype != torch.float32 or t.device.type != "cpu" or \
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
            layers.append(Layer(
                w(block.norm1.weight, C), w(getattr(block.norm1, "bias", None), C), product(a.qkv, QKV, C),
                w(a.qkv.bias, QKV), product(a.proj, C, HD), w(a.proj.bias, C), w(block.norm2.weight, C),
                w(getattr(block.norm2, "bias", None), C), product(fc, F, C), w(fc.bias, F),
                product(up, F, C) if up else Weight(), w(up.bias, F) if up else None, product(f.proj, C, F),
                w(f.proj.bias, C)))
        self._layers = (Layer * len(layers))(*layers)
        pos_table = None
        if cfg.position == "learned":
            pos_table = model.pos_emb.weight
        elif cfg.position == "sinusoidal":
            pos_table = model.pos_emb.table
        rope = cfg.position == "rope"
        T, V = cfg.context_length, cfg.vocab_size
        self.model = Model(
            cfg.n_layer, C, cfg.n_head, cfg.n_kv_head, cfg.head_dim, F, V, NORMS[cfg.norm], ACTIVATIONS[cfg.activation],
            POSITIONS[cfg.position], cfg.norm_eps, w(model.tok_emb.weight, V, C), w(pos_table, T, C),
            w(model.rope_cos if rope else None, T, cfg.head_dim), w(model.rope_sin if rope else None, T, cfg.head_dim),
            w(model.norm.weight, C), w(getattr(model.norm, "bias", None), C), product(model.lm_head, V, C),
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
        tuner = self.tuner or shared_tuner()
        start = time.perf_counter()
        status = self.lib.lmf_decode_step(ctypes.byref(m), n, ctypes.c_void_p(tokens.data_ptr()),
                                          ctypes.c_void_p(npad.data_ptr()), pos, ks, vs, s, _f(logits),
                                          _f(self._work), tuner.threads)
        tuner.record(time.perf_counter() - start)
        if status == -2:
            raise ValueError(f"a token id is outside the vocabulary of {m.vocab}")
        return logits
