"""`lmforge prune RUN --sparsity S --method magnitude|wanda --structure unstructured|2:4|heads|neurons --out`.

Pruning sets weights to zero, or removes whole parts, chosen by a score of how little each matters.

    magnitude   score_ij = |W_ij|
    Wanda       score_ij = |W_ij| ||X_j||_2        (Sun et al., 2023: a weight matters as much as the
                                                    inputs that it multiplies; ||X_j|| is input
                                                    channel j's norm over a calibration text)

**Unstructured**: the lowest-scoring fraction S of each layer's weights becomes zero. Magnitude ranks
the whole matrix; Wanda ranks within each output row, as its paper does (rows differ in scale, and
each row's output is one sum). **2:4**: in every four consecutive weights of a row, the two lowest
scores become zero (the pattern sparse tensor cores run at twice the speed; S is 0.5). Both keep
every matrix's shape: the zeros are stored, and a file or a decode step is no smaller or faster.

**Structured** removal shrinks the matrices. A neuron j of an MLP is row j of its input projection
and column j of its output projection; an attention head is its rows of W_q, W_k, W_v and its
columns of W_o (with grouped-query attention a key/value head goes with all its query heads). What
a part adds to the layer's output, with its inputs' channels taken as uncorrelated, has expected
squared norm

    sum_c ||W_o[:, c]||^2 E[a_c^2]        (c: the part's columns of the output projection; a_c the
                                           activation feeding it on the calibration text)

which is Wanda's score for the part; magnitude, with no calibration, uses ||W_in[part]|| ||W_o[:, part]||
(the norms of the weights in and out of it). The same number of neurons (or heads) leaves every
layer, each layer its own lowest-scoring ones, so the model keeps one d_ff (or n_head) and is an
ordinary smaller run whose decode step does proportionally less work.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from lmforge.checkpoint import copy_side_files, load_pretrained, save_derived
from lmforge.compress.calibration import calibration_batches, input_energy
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.models.quantized import target_linears, weights_count
from lmforge.nn import Block, SwiGLU

METHODS = ("magnitude", "wanda")
STRUCTURES = ("unstructured", "2:4", "heads", "neurons")


def check_options(sparsity: float | None, method: str, structure: str) -> float:
    """The sparsity to prune to (2:4's is 0.5), or one error naming the bad setting."""
    if method not in METHODS:
        raise LmforgeError(f"--method {method} is not known; use magnitude or wanda")
    if structure not in STRUCTURES:
        raise LmforgeError(f"--structure {structure} is not known; use unstructured, 2:4, heads or neurons")
    if structure == "2:4":
        if sparsity not in (None, 0.5):
            raise LmforgeError(f"--structure 2:4 keeps two of every four weights (sparsity 0.5), not {sparsity}; "
                               "leave --sparsity out")
        return 0.5
    if sparsity is None:
        raise LmforgeError(f"--structure {structure} needs --sparsity, the fraction to remove (e.g. 0.5)")
    if not 0.0 <= sparsity < 1.0:
        raise LmforgeError(f"--sparsity {sparsity} must be at least 0 and below 1 (e.g. 0.5 removes half)")
    return sparsity


# --- scores and masks -----------------------------------------------------------------------------------
def weight_scores(w: torch.Tensor, energy: torch.Tensor | None) -> torch.Tensor:
    """|W| (magnitude), or |W_ij| ||X_j|| (Wanda) with energy = E[x_j^2] (its root is ||X_j|| / sqrt(N))."""
    s = w.detach().abs().float()
    return s if energy is None else s * energy.sqrt()[None, :]


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """True where a weight stays: all but the lowest `sparsity` of the scores, of each row or of the whole."""
    rows = scores if per_row else scores.reshape(1, -1)
    k = int(rows.shape[1] * sparsity)
    keep = torch.ones_like(rows, dtype=torch.bool)
    if k:
        keep.scatter_(1, rows.argsort(dim=1)[:, :k], False)
    return keep.reshape(scores.shape)


def n_m_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """True for the n highest scores of every m consecutive weights along each row (2:4 by default)."""
    O, K = scores.shape
    if K % m:
        raise LmforgeError(f"a layer {K} inputs wide cannot hold a {n}:{m} pattern ({K} is not a multiple of {m})")
    groups = scores.reshape(O, K // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(n, dim=2).indices, True)
    return keep.reshape(O, K)


@torch.no_grad()
def mask_layers(model: nn.Module, names: list[str], sparsity: float, structure: str,
                energy: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Zero the lowest-scoring weights of each named Linear in place; the masks (True: kept)."""
    masks = {}
    for name in names:
        w = model.get_submodule(name).weight
        scores = weight_scores(w, energy[name] if energy is not None else None)
        keep = n_m_mask(scores) if structure == "2:4" else unstructured_mask(scores, sparsity, energy is not None)
        w.mul_(keep.to(w.dtype))
        masks[name] = keep
    return masks


# --- structured: parts of a layer -------------------------------------------------------------------------
def blocks(model: nn.Module) -> list[tuple[str, Block]]:
    found = [(name, m) for name, m in model.named_modules() if type(m) is Block]
    if model.config.family not in ("gpt", "bert") or not found:
        raise LmforgeError(f"removing heads or neurons works on GPT and BERT models, not {model.config.family}; use "
                           "--structure unstructured or 2:4")
    return found


def _in_weights(mlp: nn.Module) -> list[nn.Linear]:
    return [mlp.gate, mlp.up] if isinstance(mlp, SwiGLU) else [mlp.fc]


def neuron_scores(block: Block, energy: torch.Tensor | None) -> torch.Tensor:
    """One score per MLP neuron (see the module docstring)."""
    out = block.mlp.proj.weight.detach().float()
    if energy is not None:
        return ((out ** 2).sum(0) * energy).sqrt()
    inn = torch.cat([m.weight.detach().float() for m in _in_weights(block.mlp)], dim=1)
    return inn.norm(dim=1) * out.norm(dim=0)


def head_scores(block: Block, energy: torch.Tensor | None) -> torch.Tensor:
    """One score per key/value group (a head, without grouped-query attention)."""
    a = block.attn
    H, G, D = a.n_head, a.n_kv_head, a.head_dim
    out = a.proj.weight.detach().float()  # (C, H D)
    if energy is not None:
        per_head = ((out ** 2).sum(0) * energy).reshape(H, D).sum(1)
    else:
        v = a.qkv.weight.detach().float()[(H + G) * D:].reshape(G, D, -1)
        per_head = out.reshape(-1, H, D).pow(2).sum((0, 2)) * v.pow(2).sum((1, 2)).repeat_interleave(H // G)
    return per_head.reshape(G, H // G).sum(1).sqrt()


def _kept(scores: torch.Tensor, remove: int) -> torch.Tensor:
    return scores.argsort(descending=True)[: len(scores) - remove].sort().values


def shrink(model: nn.Module, structure: str, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A new, smaller model: for each block (by name) the kept neurons, or the kept key/value groups."""
    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    count = len(next(iter(keep.values())))
    for prefix, idx in keep.items():
        p = f"{prefix}." if prefix else ""
        if structure == "neurons":
            for name in ("mlp.fc", "mlp.gate", "mlp.up"):
                for part in ("weight", "bias"):
                    if f"{p}{name}.{part}" in sd:
                        sd[f"{p}{name}.{part}"] = sd[f"{p}{name}.{part}"][idx]
            sd[f"{p}mlp.proj.weight"] = sd[f"{p}mlp.proj.weight"][:, idx]
        else:
            H, G, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
            heads = (idx[:, None] * (H // G) + torch.arange(H // G)).reshape(-1)
            rows = lambda first, units: ((first + units)[:, None] * D + torch.arange(D)).reshape(-1)  # noqa: E731
            qkv_rows = torch.cat([rows(0, heads), rows(H, idx), rows(H + G, idx)])
            for part in ("weight", "bias"):
                if f"{p}attn.qkv.{part}" in sd:
                    sd[f"{p}attn.qkv.{part}"] = sd[f"{p}attn.qkv.{part}"][qkv_rows]
            sd[f"{p}attn.proj.weight"] = sd[f"{p}attn.proj.weight"][:, rows(0, heads)]
    if structure == "neurons":
        new_cfg = dataclasses.replace(cfg, d_ff=count)
    else:
        r = cfg.n_head // cfg.n_kv_head
        new_cfg = dataclasses.replace(cfg, n_head=count * r, n_kv_head=count, head_size=cfg.head_dim)
    smaller = build_model(new_cfg)
    smaller.load_state_dict(sd)
    return smaller.eval()


def remove_parts(model: nn.Module, structure: str, sparsity: float,
                 energy: dict[str, torch.Tensor] | None) -> nn.Module:
    """The model with the same number of its lowest-scoring neurons (or heads) removed from every block."""
    found = blocks(model)
    cfg = model.config
    units = cfg.d_ff if structure == "neurons" else cfg.n_kv_head
    remove = min(int(units * sparsity), units - 1)
    if remove == 0:
        what = "neurons" if structure == "neurons" else "key/value heads"
        raise LmforgeError(f"--sparsity {sparsity} removes none of each layer's {units} {what}; give at least "
                           f"{1 / units:.3g}")
    keep = {}
    for name, block in found:
        e = energy.get(f"{name}.{'mlp' if structure == 'neurons' else 'attn'}.proj") if energy else None
        scores = neuron_scores(block, e) if structure == "neurons" else head_scores(block, e)
        keep[name] = _kept(scores, remove)
    return shrink(model, structure, keep)


# --- the command ---------------------------------------------------------------------------------------------
def prune_run(run: str | Path, out: str | Path, sparsity: float | None, method: str = "magnitude",
              structure: str = "unstructured", calibration: str | None = None, then=None) -> dict:
    """Load `run`, prune it, save it to `out` as an ordinary run; a summary of what was done.
    then: what writes `out` instead, given the pruned model and its masks (None when structured), e.g.
    a recovery that trains it first (train/recover.py); its result is the summary's "recovery"."""
    run, out = Path(run), Path(out)
    sparsity = check_options(sparsity, method, structure)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"{out} exists and is not empty; give a new directory for the pruned model")
    model, tokenizer = load_pretrained(run)
    if model.config.quantization:
        raise LmforgeError(f"{run} is quantised; prune the float run, then quantise the pruned one")
    if getattr(model, "lora", None) is not None:
        raise LmforgeError(f"{run} is a LoRA run; fold its adapters in first with `lmforge merge {run} --out MERGED` "
                           "and prune that")
    before = weights_count(model)
    names = target_linears(model, head=False)
    if structure in ("heads", "neurons"):
        blocks(model)
    energy = None
    if method == "wanda":
        batches = calibration_batches(calibration, tokenizer, model.config.context_length, run)
        energy = input_energy(model, names, batches)
    masks = None
    if structure in ("heads", "neurons"):
        model = remove_parts(model, structure, sparsity, energy)
    else:
        masks = mask_layers(model, names, sparsity, structure, energy)
    recovery = None
    if then is not None:
        recovery = then(model, masks)
        copy_side_files(run, out, skip=("recipe.yaml",))  # a recovery writes its own
    else:
        save_derived(run, out, model, tokenizer)
    weights = [model.get_submodule(n).weight for n in target_linears(model, head=False)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    return {"run": str(run), "out": str(out), "method": method, "structure": structure, "sparsity": sparsity,
            "zero_fraction": zeros, "parameters_before": before, "parameters_after": weights_count(model),
            "d_ff": model.config.d_ff, "n_head": model.config.n_head, "recovery": recovery}

