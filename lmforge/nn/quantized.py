"""Weight-only quantisation: a Linear layer whose weights are small integers and a scale per group.

Symmetric int8, per output row (or per group of `g` inputs along the row):

    s = max |w| / 127        q = clamp(round(w / s), -127, 127)        w ~ s q

Grouped int4: each row cut into groups of `g` consecutive inputs, each group its own scale s and
zero point z, and its integers u in [0, 15]:

    with zero points   s = (max w - min w) / 15    z = clamp(round(-min w / s), 0, 15)
    symmetric          s = max |w| / 7             z = 8
    u = clamp(round(w / s) + z, 0, 15)             w ~ s (u - z)

Rounding to the nearest step errs by at most s / 2 per weight (where nothing is clipped). Two int4
values share a byte: byte i of a group holds input i in its low four bits and input i + g/2 in its
high four (so a group unpacks into its two halves with one mask and one shift). An int8 weight
takes 1 byte and an int4 weight half a byte, against float32's 4, plus one float scale (and zero)
per group.

The product y = x W^T + b is computed without a float32 copy of W: `QuantLinear` dequantises a tile
of output rows at a time (at most TILE values), multiplies, and moves on. For decoding, the compiled
step and `generate` read the integers directly (generate/cpu/products.c; int4 there multiplies in
bfloat16 where the CPU has AVX512-BF16: docs/compression.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BITS = (8, 4)
TILE = 1 << 18  # float values dequantised at once in QuantLinear.forward (1 MiB)


def quantize_int8(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w (O, K) -> (q int8 (O, K), s float32 (O, K/group)), symmetric: s = max|w| / 127 per group."""
    O, K = w.shape
    g = w.detach().float().reshape(O, K // group, group)
    s = (g.abs().amax(-1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(g / s[..., None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(O, K), s


def quantize_int4(w: torch.Tensor, group: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """w (O, K) -> (u in [0, 15] as uint8 (O, K), s (O, K/group), z (O, K/group) or None when symmetric)."""
    O, K = w.shape
    g = w.detach().float().reshape(O, K // group, group)
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        s = (g.abs().amax(-1) / 7).clamp_min(tiny)
        z = None
        zero = torch.full_like(s, 8.0)
    else:
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)  # the range always holds 0 (exactly representable)
        s = ((hi - lo) / 15).clamp_min(tiny)
        z = zero = torch.round(-lo / s).clamp(0, 15)
    u = (torch.round(g / s[..., None]) + zero[..., None]).clamp(0, 15).to(torch.uint8)
    return u.reshape(O, K), s, z


def pack_int4(u: torch.Tensor, group: int) -> torch.Tensor:
    """u (O, K) in [0, 15] -> (O, K/2) bytes: byte i of each group = u[i] | u[i + group/2] << 4."""
    O, K = u.shape
    g = u.reshape(O, K // group, group)
    half = group // 2
    return (g[..., :half] | (g[..., half:] << 4)).reshape(O, K // 2).contiguous()


def unpack_int4(p: torch.Tensor, group: int) -> torch.Tensor:
    """The inverse of pack_int4: (O, K/2) bytes -> u (O, K) uint8."""
    O, half_k = p.shape
    g = p.reshape(O, half_k * 2 // group, group // 2)
    return torch.cat([g & 15, g >> 4], dim=-1).reshape(O, half_k * 2)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int) -> torch.Tensor:
    """Rows of a quantised weight back to float32: s q (int8) or s (u - z) (int4), shape (rows, K)."""
    O, n_groups = scales.shape
    if bits == 8:
        q = qweight.float()
    else:
        q = unpack_int4(qweight, qweight.shape[1] * 2 // n_groups).float()
    q = q.reshape(O, n_groups, -1)
    if bits == 4:
        q = q - (zeros if zeros is not None else torch.full_like(scales, 8.0))[..., None]
    return (q * scales[..., None]).reshape(O, -1)


class QuantLinear(nn.Module):
    """y = x W^T + b with W stored as integers: `qweight` (int8 (O, K), or packed int4 (O, K/2) uint8),
    `scales` (O, K/group) and, for int4 with zero points, `zeros` (O, K/group). Buffers, not
    parameters: the integers do not train (a bias, when there is one, stays a float parameter)."""

    def __init__(self, in_features: int, out_features: int, bits: int, group: int, symmetric: bool = True,
                 bias: bool = True, device=None):
        super().__init__()
        if bits not in BITS:
            raise ValueError(f"bits must be 8 or 4, not {bits}")
        if group < 2 or group % 2 or in_features % group:
            raise ValueError(f"the group size {group} must be even and divide the input width {in_features}")
        self.in_features, self.out_features, self.bits, self.group = in_features, out_features, bits, group
        self.symmetric = symmetric or bits == 8
        width = in_features if bits == 8 else in_features // 2
        dtype = torch.int8 if bits == 8 else torch.uint8
        self.register_buffer("qweight", torch.zeros(out_features, width, dtype=dtype, device=device))
        self.register_buffer("scales", torch.ones(out_features, in_features // group, device=device))
        self.register_buffer("zeros", None if self.symmetric else
                             torch.zeros(out_features, in_features // group, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group: int | None = None, symmetric: bool = True) -> "QuantLinear":
        """`linear` quantised by round-to-nearest; group None: one group per row (per output channel)."""
        K = linear.in_features
        group = group or K
        q = cls(K, linear.out_features, bits, group, symmetric, linear.bias is not None, device=linear.weight.device)
        q.load_weight(linear.weight)
        if linear.bias is not None:
            q.bias.data.copy_(linear.bias.detach())
        return q

    @torch.no_grad()
    def load_weight(self, w: torch.Tensor) -> None:
        """Quantise float weights `w` (O, K) into this layer's integers and scales."""
        if self.bits == 8:
            q, s = quantize_int8(w, self.group)
            self.qweight.copy_(q)
        else:
            u, s, z = quantize_int4(w, self.group, self.symmetric)
            self.qweight.copy_(pack_int4(u, self.group))
            if z is not None:
                self.zeros.copy_(z)
        self.scales.copy_(s)

    def dequantized(self, rows: slice = slice(None)) -> torch.Tensor:
        z = self.zeros[rows] if self.zeros is not None else None
        return dequantize(self.qweight[rows], self.scales[rows], z, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, O = self.in_features, self.out_features
        flat = x.reshape(-1, K)
        tile = max(1, TILE // K)
        if tile >= O:
            y = F.linear(flat, self.dequantized().to(x.dtype))
        else:
            y = torch.cat([F.linear(flat, self.dequantized(slice(o, o + tile)).to(x.dtype))
                           for o in range(0, O, tile)], dim=-1)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], O)

    def extra_repr(self) -> str:
        kind = "int8" if self.bits == 8 else f"int4 {'symmetric' if self.symmetric else 'zero points'}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, {kind}, group={self.group}, "
                f"bias={self.bias is not None}")

