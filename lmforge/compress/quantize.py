"""`lmforge quantize RUN --bits 8|4 [--group-size G] [--calibration FILE] --out RUN_Q`: weight-only
integer weights for every product of the Transformer layers (and the output head), activations in float.

Round-to-nearest (nn/quantized.py has the formulas) is the baseline. With a calibration text, each
group's range is also searched (clipping): the scale s = c * max|w| / qmax for the factor c in CLIPS
that makes the smallest error on what the layer actually sees,

    err(c) = sum_k E[x_k^2] (w_k - w~_k(c))^2        (the expected squared error of x . w, the inputs'
                                                      channels taken as uncorrelated)

where E[x_k^2] is measured on the calibration text by running the float model over it. Clipping
the few largest weights of a group trades their error for a finer step on all the others, and the
inputs' energy says which channels' errors matter. (Measured on the bench model: see
docs/compression.md; `lmforge quantize` keeps round-to-nearest without a calibration file.)

The result is an ordinary run directory: config.json gains `quantization` (models/quantized.py) and
model.safetensors holds the integers and scales; `load`, `generate`, `eval`, `chat`, `serve` and
`predict` take it as they take any run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lmforge.checkpoint import load_pretrained, save_derived
from lmforge.compress.calibration import calibration_batches, input_energy
from lmforge.errors import LmforgeError
from lmforge.models.modules import replace_module
from lmforge.models.quantized import quantized_names, target_linears
from lmforge.nn.quantized import BITS, QuantLinear

DEFAULT_GROUP = {8: None, 4: 64}  # int8: one scale per output row; int4: per 64 inputs
CLIPS = tuple(1.0 - 0.025 * i for i in range(13))  # 1.0 .. 0.7


def check_options(bits: int, group_size: int | None) -> None:
    if bits not in BITS:
        raise LmforgeError(f"--bits {bits} is not supported; use 8 or 4")
    if group_size is not None and (group_size < 2 or group_size % 2):
        raise LmforgeError(f"--group-size {group_size} must be an even number of 2 or more (e.g. 64 or 128)")


def check_groups(model: nn.Module, names: list[str], group_size: int | None) -> None:
    if group_size is None:
        return
    for name in names:
        width = model.get_submodule(name).in_features
        if width % group_size:
            divisors = [g for g in (32, 64, 128, 256) if width % g == 0]
            hint = f"use one that does, such as {divisors[-1]}" if divisors else "leave --group-size out"
            raise LmforgeError(f"--group-size {group_size} does not divide the width {width} of {name}; {hint}")


@torch.no_grad()
def clipped_layer(linear: nn.Linear, bits: int, group: int, symmetric: bool, energy: torch.Tensor) -> QuantLinear:
    """`linear` quantised with each group's clipping factor chosen from CLIPS by the energy-weighted error."""
    w = linear.weight.detach().float()
    O, K = w.shape
    best_err = torch.full((O, K // group), float("inf"))
    best = QuantLinear.from_linear(linear, bits, group, symmetric)
    e = energy.reshape(1, K // group, group)
    for c in CLIPS:
        trial = QuantLinear(K, O, bits, group, symmetric, linear.bias is not None)
        trial.load_weight(_clip(w, group, c))
        err = (((trial.dequantized() - w) ** 2).reshape(O, K // group, group) * e).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        rows = better[..., None].expand(O, K // group, group).reshape(O, K)
        if bits == 8:
            best.qweight[rows] = trial.qweight[rows]
        else:  # packed: a byte holds two inputs of the same group
            packed = rows.reshape(O, K // group, group)[..., : group // 2].reshape(O, K // 2)
            best.qweight[packed] = trial.qweight[packed]
            if best.zeros is not None:
                best.zeros[better] = trial.zeros[better]
        best.scales[better] = trial.scales[better]
    return best


def _clip(w: torch.Tensor, group: int, c: float) -> torch.Tensor:
    """Each group of `w` clamped to c times its own range [c min, c max]."""
    O, K = w.shape
    g = w.reshape(O, K // group, group)
    lo, hi = g.amin(-1, keepdim=True) * c, g.amax(-1, keepdim=True) * c
    return torch.maximum(torch.minimum(g, hi), lo).reshape(O, K)


def quantize_model(model: nn.Module, bits: int, group_size: int | None = None, symmetric: bool = False,
                   head: bool = True, energy: dict[str, torch.Tensor] | None = None) -> dict:
    """Replace the model's Transformer-layer (and head) Linear layers by QuantLinear, in place; the
    quantization spec that config.json keeps."""
    check_options(bits, group_size)
    names = target_linears(model, head)
    check_groups(model, names, group_size)
    for name in names:
        linear = model.get_submodule(name)
        group = group_size or linear.in_features
        if energy is not None and name in energy:
            q = clipped_layer(linear, bits, group, symmetric, energy[name])
        else:
            q = QuantLinear.from_linear(linear, bits, group, symmetric)
        replace_module(model, name, q)
    return {"bits": bits, "group_size": group_size, "symmetric": bits == 8 or symmetric,
            "method": "clip" if energy is not None else "rtn", "modules": names}


def quantize_run(run: str | Path, out: str | Path, bits: int, group_size: int | None = None, symmetric: bool = False,
                 keep_head: bool = False, calibration: str | None = None) -> dict:
    """Load `run`, quantise it, save it to `out` as an ordinary run; a summary of what was done."""
    run, out = Path(run), Path(out)
    check_options(bits, group_size)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"{out} exists and is not empty; give a new directory for the quantised model")
    model, tokenizer = load_pretrained(run)
    if model.config.quantization:
        q = model.config.quantization
        raise LmforgeError(f"{run} is already quantised (int{q['bits']}); quantise the original float run instead")
    if getattr(model, "lora", None) is not None:
        raise LmforgeError(f"{run} is a LoRA run; fold its adapters in first with `lmforge merge {run} --out MERGED` "
                           "and quantise that")
    group_size = group_size if group_size is not None else DEFAULT_GROUP[bits]
    before = _bytes(model)
    names = target_linears(model, not keep_head)
    check_groups(model, names, group_size)
    energy = None
    if calibration is not None:
        batches = calibration_batches(calibration, tokenizer, model.config.context_length, run)
        energy = input_energy(model, names, batches)
    spec = quantize_model(model, bits, group_size, symmetric, not keep_head, energy)
    model.config.quantization = spec
    save_derived(run, out, model, tokenizer)
    after = _bytes(model)
    return {"run": str(run), "out": str(out), "bits": bits, "group_size": group_size, "symmetric": spec["symmetric"],
            "method": spec["method"], "layers": len(quantized_names(model)), "bytes_before": before,
            "bytes_after": after, "ratio": before / after}


def _bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as saved (a tensor shared by several names counted once)."""
    seen = {}
    for t in model.state_dict().values():
        seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = t.numel() * t.element_size()
    return sum(seen.values())
