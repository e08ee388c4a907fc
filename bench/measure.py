"""Timing loops shared by every peer: the same optimiser, batches, autocast and clock for all.

Training: forward + backward + gradient clipping + fused AdamW step, on the same seeded batches.
`warmup` steps are run untimed, then `windows` windows of `steps_per_window` steps are timed; each
window gives one tokens/s figure and the report takes the median. Decoding: one untimed warm-up
generation of the full length (it also triggers any compilation), then `repeats` timed ones.
"""

from __future__ import annotations

import contextlib
import time

import torch

from bench.peers import Peer
from lmforge.config import TrainConfig
from lmforge.data.batches import RandomWindows
from lmforge.train.trainer import make_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(device: torch.device, dtype: str):
    """bfloat16 autocast on the device, or a no-op for float32."""
    if dtype == "bfloat16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def train(peer: Peer, tokens, dtype: str, warmup: int, windows: int, steps_per_window: int, seed: int) -> dict:
    """tokens/s per timed window, and the loss at every step (warm-up included), from one seeded init."""
    shape, device = peer.shape, peer.device
    cfg = TrainConfig()  # lmforge's defaults: lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on matrices, clip 1.0
    optimizer = make_optimizer(peer.model, cfg)  # fused AdamW with decay groups, the same for every peer
    batches = RandomWindows(tokens, shape.batch_size, shape.context_length, seed)
    amp = autocast_for(device, dtype)
    peer.model.train()
    losses: list[float] = []

    def step() -> None:
        x, y = batches.next()  # y is a strided view; nanoGPT's loss needs it contiguous
        x, y = x.to(device).contiguous(), y.to(device).contiguous()
        with amp():
            loss = peer.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # a sync point every step, as in a real training loop

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_s = time.perf_counter() - t0
    tokens_per_step = shape.batch_size * shape.context_length
    rates = []
    for _ in range(windows):
        sync(device)
        t = time.perf_counter()
        for _ in range(steps_per_window):
            step()
        sync(device)
        rates.append(steps_per_window * tokens_per_step / (time.perf_counter() - t))
    return {"rates": rates, "losses": losses, "warmup_s": warmup_s}


@torch.no_grad()
def decode(peer: Peer, prompt: torch.Tensor, new_tokens: int, repeats: int, sampled: bool,
           temperature: float, top_k: int, seed: int) -> dict:
    """New tokens/s (all rows together) per timed generation; the first call's time is kept apart."""
    device = peer.device
    prompt = prompt.to(device)
    peer.model.eval()

    def run() -> tuple[float, torch.Tensor]:
        sync(device)
        t = time.perf_counter()
        out = peer.sample(prompt, new_tokens, temperature, top_k, seed) if sampled else peer.greedy(prompt, new_tokens)
        sync(device)
        return time.perf_counter() - t, out

    first_s, out = run()
    want = (prompt.size(0), prompt.size(1) + new_tokens)
    if tuple(out.shape) != want:
        raise RuntimeError(f"{peer.name} returned {tuple(out.shape)} tokens, expected {want}")
    rates = []
    for _ in range(repeats):
        dt, _ = run()
        rates.append(prompt.size(0) * new_tokens / dt)
    return {"rates": rates, "first_call_s": first_s}
