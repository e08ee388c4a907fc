"""The output projection and the cross-entropy, a few rows at a time.

With hidden states h (N, C), the head W (V, C) and targets y (N,):

    z = h W^T                          logits, (N, V)
    L = sum_n (logsumexp(z_n) - z_n[y_n])        (divided by the number of targets for the mean)
    dL/dz_n = softmax(z_n) - onehot(y_n)
    dL/dh = (dL/dz) W,    dL/dW = (dL/dz)^T h

Computed all at once, z and its gradient are two (N, V) float tensors: 64 MB each for 2,048 tokens
and a vocabulary of 8,192, 1.6 GB for GPT-2's 8 x 1024 tokens and 50,257 entries, written and read
several times. Here the rows go in chunks of about 4M logits: each chunk's logits, softmax and
gradient stay in the CPU's cache, the gradients for h and W are accumulated during the forward
pass, and backward only scales them. Targets equal to `ignore_index` count for nothing.
"""

from __future__ import annotations

import torch

from lmforge.data import IGNORE
from lmforge.runtime import compute_dtype

CHUNK_LOGITS = 1 << 22  # logits per chunk: 16 MB in float32 (measured best of 2 to 32 MB)


def _softmax_(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(z) in place of z (n, V), and logsumexp(z) (n,): m = max z, s = sum exp(z - m),
    lse = m + log s, softmax = exp(z - m) / s. In place, with no (n, V) temporaries: on a CPU,
    torch.logsumexp followed by exp(z - lse) takes about four times as long."""
    m = z.amax(-1, keepdim=True)
    s = z.sub_(m).exp_().sum(-1, keepdim=True)
    return z.div_(s), (m + s.log()).squeeze(1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, ignore_index, chunk_rows):
        dtype = compute_dtype(h)
        w = weight.to(dtype)
        valid = targets != ignore_index
        count = valid.sum().clamp(min=1)
        every = bool(valid.all())
        grad_h = torch.empty_like(h, dtype=torch.float32)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, h.size(0), chunk_rows):
                hc, yc, vc = h[s:s + chunk_rows].to(dtype), targets[s:s + chunk_rows], valid[s:s + chunk_rows]
                z = (hc @ w.t()).float()  # (n, V)
                picked = z.gather(1, yc.clamp(min=0).unsqueeze(1)).squeeze(1)
                g, lse = _softmax_(z)
                total += ((lse - picked) * vc).sum()
                g[torch.arange(g.size(0), device=g.device), yc.clamp(min=0)] -= 1.0
                if not every:
                    g *= vc.unsqueeze(1)  # ignored rows: no gradient
                grad_h[s:s + chunk_rows] = (g.to(dtype) @ w).float()
                grad_w += (g.t().to(dtype) @ hc).float()
        ctx.save_for_backward(grad_h, grad_w, count)
        ctx.dtypes = (h.dtype, weight.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad_out / count
        return (grad_h * scale).to(ctx.dtypes[0]), (grad_w * scale).to(ctx.dtypes[1]), None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                         ignore_index: int = IGNORE, chunk_logits: int = CHUNK_LOGITS) -> torch.Tensor:
    """cross_entropy(h @ weight.T, targets) for h (N, C), weight (V, C), targets (N,), without ever
    holding all N x V logits. reduction "mean" (over targets not ignored) or "sum"."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean or sum, not {reduction!r}")
    rows = max(1, chunk_logits // weight.size(0))
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        mean = _LinearCrossEntropy.apply(h, weight, targets, ignore_index, rows)
        return mean if reduction == "mean" else mean * (targets != ignore_index).sum().clamp(min=1)
    dtype = compute_dtype(h)
    w = weight.to(dtype).t()
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for s in range(0, h.size(0), rows):
        z = (h[s:s + rows].to(dtype) @ w).float()
        total += torch.nn.functional.cross_entropy(z, targets[s:s + rows], ignore_index=ignore_index, reduction="sum")
    return total if reduction == "sum" else total / (targets != ignore_index).sum().clamp(min=1)
