"""LoRA: low-rank adapters on chosen Linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of
Large Language Models").

A fine-tune changes a pretrained weight W (out x in) by some dW. LoRA learns dW as the product of
two thin matrices and keeps W frozen:

    h = W x + (alpha / r) B A dropout(x)        A: (r, in),  B: (out, r),  r << min(in, out)

B starts at zero, so at step 0 the adapted model is the base model exactly; A starts as nn.Linear's
own weights do (Kaiming-uniform), as in PEFT. Only A and B train, r (in + out) numbers per adapted
layer instead of in x out: GPT-2's fused QKV (768 -> 2,304) at r = 8 trains 8 x (768 + 2,304) =
24,576 numbers against 1,769,472 (1.4%). Merged, W' = W + (alpha / r) B A is the same function at no
extra cost per token (`merge`).

Targets are named by the Linear layers' own names in lmforge's blocks: qkv (self-attention's fused
query/key/value), proj (every output projection: attention's and the feed-forward's), fc (the
feed-forward's input side: fc, or gate and up in SwiGLU), q and kv (cross-attention's). Embeddings,
norms and the output head stay frozen; parts a task adds (a classifier's head) train in full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.nn.dropout import Dropout
from lmforge.models.modules import plain_linear, replace_module

TARGETS = {"qkv": ("qkv",), "proj": ("proj",), "fc": ("fc", "gate", "up"), "q": ("q",), "kv": ("kv",)}


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("qkv", "proj", "fc")
    base: str = ""  # the base model's directory: an adapter is read onto it (PEFT's base_model_name_or_path)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def check(self) -> None:
        if self.rank < 1:
            raise LmforgeError("{setting} must be 1 or more (8 is usual; 0 turns LoRA off)", "task.lora_rank", self.rank)
        if not 0 <= self.dropout < 1:
            raise LmforgeError("{setting} must be in [0, 1)", "task.lora_dropout", self.dropout)
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise LmforgeError(f"{{setting}} names {unknown[0] if unknown else 'nothing'}; give a comma-separated list "
                               f"of {', '.join(TARGETS)}", "task.lora_targets", ",".join(self.targets))


class LoRALinear(nn.Linear):
    """A Linear layer with an adapter: y = W x + b + scaling B A dropout(x), scaling = alpha / r. It
    keeps the layer's own weight and bias (same parameters, same names), so the base model's weights
    load into it as they are."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.scaling = rank, scaling
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + low_rank * self.scaling

    def delta(self) -> torch.Tensor:
        """(alpha / r) B A: what merging adds to W."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling:g}"


def base_prefix(model_config) -> str:
    """Where a model's pretrained part lies: "base." in a task model (a head over a base), else the whole."""
    return "base." if getattr(model_config, "head", "none") not in ("none", None, "") else ""


def adapted_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(model: nn.Module, settings: LoraSettings, base_prefix: str = "", train_also: tuple[str, ...] = ()) -> dict:
    """Put adapters on the `settings.targets` layers under `base_prefix` (the pretrained part: "base."
    in a task model, "" for the whole model) and freeze that part; parts outside it (a new head), and
    parameters whose names start with one of `train_also` (embeddings grown for new tokens), stay
    trainable. Returns {"trainable": n, "total": N, "fraction": n / N, "layers": adapted layers}."""
    settings.check()
    names = {n for t in settings.targets for n in TARGETS[t]}
    chosen = [(name, m) for name, m in model.named_modules()
              if type(m) is nn.Linear and name.startswith(base_prefix) and name.rsplit(".", 1)[-1] in names
              and ".blocks." in f".{name}"]
    if not chosen:
        raise LmforgeError(f"{{setting}} matches no layer of this model; its blocks' layers are named "
                           f"{', '.join(sorted(TARGETS))}", "task.lora_targets", ",".join(settings.targets))
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(base_prefix) or name.startswith(train_also))
    for name, m in chosen:
        replace_module(model, name, LoRALinear(m, settings.rank, settings.scaling, settings.dropout))
    model.lora = settings  # the model says it is adapted, and how (checkpoint.py saves the adapter alone)
    return trainable_report(model) | {"layers": len(chosen)}


def attach_adapter(model: nn.Module, tensors: dict[str, torch.Tensor], settings: LoraSettings) -> None:
    """Put saved adapters back on `model` (a base model, or a task model whose base is loaded):
    `tensors` holds each adapted layer's `<layer>.lora_A` / `.lora_B` (its rank read from A; the
    scaling is alpha / settings.rank, as PEFT computes it) and the parts that trained in full, which
    train again (resuming) while the rest stays frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    for key in sorted(k for k in tensors if k.endswith(".lora_A")):
        layer = key[:-len(".lora_A")]
        m = plain_linear(model, layer)
        if m is None:
            raise LmforgeError(f"the adapter has LoRA tensors for {layer}, which is not a Linear layer of this model; "
                               "it belongs to another base model")
        replace_module(model, layer, LoRALinear(m, tensors[key].size(0), settings.scaling, settings.dropout))
    params = dict(model.named_parameters())
    for name in tensors:
        if name in params:
            params[name].requires_grad_(True)
    model.lora = settings
    load_trained(model, tensors)


def load_trained(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved trained tensors (`trained_tensors`' names) into the model; every one must be there."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which this model does not train"
        raise LmforgeError(f"the adapter {what}; it belongs to another model or run")
    with torch.no_grad():
        for name, p in params.items():
            if tensors[name].shape != p.shape:
                raise LmforgeError(f"the adapter's {name} is {tuple(tensors[name].shape)}, the model's "
                                   f"{tuple(p.shape)}; it belongs to another model or run")
            p.copy_(tensors[name])


def trainable_report(model: nn.Module) -> dict:
    params = {id(p): p for p in model.parameters()}.values()  # tied weights once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (W += (alpha / r) B A) and put plain Linear layers back."""
    with torch.no_grad():
        for name, m in adapted_layers(model).items():
            plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
            plain.weight, plain.bias = m.weight, m.bias
            plain.weight.add_(m.delta().to(plain.weight.dtype))
            replace_module(model, name, plain)
    model.lora = None
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA run saves: the adapters' A and B, and the parts that trained in full (a task's head)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
