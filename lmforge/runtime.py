"""Device and precision: chosen by what the machine has, never hard-coded.

dtype "auto" is bfloat16 autocast on CUDA, and on a CPU whose probe (`bf16_speedup()`: a training
step of one Transformer layer as wide as the model, autocast's casts included; run once per CPU model, torch
version and width, then read from the cache) shows bfloat16 at least BF16_MIN_SPEEDUP times as fast as
float32; float32 otherwise (bfloat16 matmuls are hundreds of times slower on some CPUs and several times faster on
others, and where they are fast the casts around them can still eat the gain).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time

import torch

from lmforge.errors import LmforgeError
from lmforge.io import cache_dir, write_json

BF16_MIN_SPEEDUP = 1.3  # below this, the casts autocast adds eat what bfloat16 products save
PROBE = "autocast Block step 16x128x{width}, heads of 64"  # in the cache key: a changed probe measures again
PROBE_WIDTHS = (64, 1024)  # the probe's width is the model's, rounded up to 64 and at most 1024


def pick_device(name: str = "auto", setting: str = "device='cpu'") -> torch.device:
    """The torch device `name` names (auto: CUDA where there is one). `setting` is how the caller's
    user chooses it, for the error when it is not there."""
    name = name.strip().lower() if isinstance(name, str) else name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LmforgeError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LmforgeError(f"device {name!r} was asked for but CUDA is not available here; use {setting}")
    return device


def choose_dtype(device: torch.device, dtype: str = "auto", width: int = 128) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for train.dtype=`dtype` on `device` (None: plain float32), and why, for a
    model `width` (d_model) wide: bfloat16 gains with width (128: 0.96x, 384: 1.4x on a 2-core Xeon)."""
    if dtype in ("float32", "bfloat16"):
        return (torch.bfloat16 if dtype == "bfloat16" else None), f"train.dtype={dtype}"
    if device.type == "cuda":
        return torch.bfloat16, "bfloat16 autocast is the default on CUDA"
    if device.type != "cpu":
        return None, f"float32 is the default on {device.type}"
    width = probe_width(width)
    speedup = cached_bf16_speedup(width)
    verdict = "at least" if speedup >= BF16_MIN_SPEEDUP else "under"
    why = (f"this CPU runs a {width}-wide Transformer layer's step (forward, backward, AdamW) {speedup:.2f}x as fast "
           "in bfloat16 "
           f"as in float32, {verdict} {BF16_MIN_SPEEDUP}x (probe cached in {cache_dir('probes')}; train.dtype=float32 "
           "or bfloat16 overrides)")
    return (torch.bfloat16 if speedup >= BF16_MIN_SPEEDUP else None), why


def autocast_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype alone (see choose_dtype), or None for plain float32."""
    return choose_dtype(device, dtype)[0]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def probe_width(width: int) -> int:
    """The width the probe measures for a model `width` wide: rounded up to a multiple of 64, within PROBE_WIDTHS."""
    return min(max(-(-int(width) // 64) * 64, PROBE_WIDTHS[0]), PROBE_WIDTHS[1])


def cached_bf16_speedup(width: int = 128) -> float:
    """bf16_speedup() of this machine at `width`, measured once per CPU model, torch version and
    width and kept in the cache (a probe is a second or two of work; every run reads it back)."""
    key = f"{cpu_model()} | torch {torch.__version__} | {PROBE.format(width=width)}"
    path = cache_dir("probes") / f"bf16-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key and float(saved["bf16_speedup"]) > 0:
            return float(saved["bf16_speedup"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # absent, or not whole: measure again
    speedup = bf16_speedup(width=width)
    try:
        write_json(path, {"key": key, "bf16_speedup": speedup, "measured": time.strftime("%Y-%m-%d %H:%M:%S")})
    except LmforgeError:
        pass  # an unwritable cache costs a probe per run, not the run
    return speedup


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context-manager factory: autocast to `dtype`, or a no-op for float32."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype an autocast region on t's device would multiply in, else t's own."""
    kind = t.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else t.dtype


def bf16_speedup(batch: int = 16, seq: int = 128, width: int = 128, repeats: int = 10,
                 budget_s: float = 2.0) -> float:
    """How many times faster a training step runs under bfloat16 autocast than in float32 here:
    forward, backward and an AdamW step of one Transformer layer (nn.Block: attention, MLP, norms)
    on batch x seq x width activations (heads of 64, at least one), with float32 weights as in training,
    so the casts autocast adds and the work bfloat16 does not speed up weigh as they do in a run.
    The best of `repeats` alternated timings of each (other programs only ever slow one down),
    stopping early after `budget_s` seconds (a CPU without bfloat16 units is hundreds of times slower)."""
    from lmforge.config import model_config_from_preset
    from lmforge.nn import Block

    with torch.random.fork_rng():  # the caller's random stream stays where it was
        torch.manual_seed(0)
        cfg = model_config_from_preset("gpt-mini", d_model=width, n_head=max(1, width // 64), context_length=seq,
                                       dropout=0.0)
        layer = Block(cfg)
        x = torch.randn(batch, seq, width)
    opt = torch.optim.AdamW(layer.parameters())

    def step(bf16: bool) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)[0]
        y.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step(False), step(True)  # the first steps allocate and pack
    fp32, bf16, stop = [], [], time.perf_counter() + budget_s
    for _ in range(repeats):  # alternated, so that a busy moment slows both alike
        fp32.append(step(False))
        bf16.append(step(True))
        if time.perf_counter() > stop:
            break
    return min(fp32) / min(bf16)
