"""LoRA adapters in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors`, so that
`peft.PeftModel.from_pretrained(exported_base, run)` loads an lmforge adapter, and lmforge loads PEFT's.

Tensors are named as PEFT names them, `base_model.model.<module>.lora_A.weight` (A: (r, in)) and
`.lora_B.weight` (B: (out, r)); a part that trained in full (a task's new head) is saved whole under
`base_model.model.<module>.<param>`. For a GPT of the GPT-2 or Llama shape, <module> is the module of
the Hugging Face model lmforge exports (hf/gpt.py), so the adapter fits the exported directory:

    lmforge blocks.{i}.attn.qkv   GPT-2 transformer.h.{i}.attn.c_attn     (Conv1D: fan_in_fan_out)
                                  Llama model.layers.{i}.self_attn.{q,k,v}_proj: one A each (the same
                                        A), B split by rows q | k | v

since [B_q; B_k; B_v] A x = [B_q A x; B_k A x; B_v A x]. Read back, three modules whose A differ
(an adapter trained by PEFT on a Llama) become one fused layer of rank 3r, exact:
A = [A_q; A_k; A_v], B = blockdiag(B_q, B_k, B_v). Other models keep lmforge's module names.
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError

PREFIX = "base_model.model."
HALVES = ("lora_A", "lora_B")


def module_map(model_config) -> dict[str, list[str]]:
    """lmforge module -> the Hugging Face modules it is exported as: for a plain GPT of an exportable
    shape; {} for anything else (its adapter keeps lmforge's names)."""
    from lmforge.models.hf.gpt import _names, hf_shape

    from lmforge.models.lora import base_prefix

    if model_config.family != "gpt" or base_prefix(model_config):
        return {}
    try:
        hf_shape(model_config)
    except LmforgeError:
        return {}
    return {lm[:-len(".weight")]: [h[:-len(".weight")] for h in hf]
            for hf, lm, _ in _names(model_config) if lm.endswith(".weight")}


def _splits(model_config, parts: int) -> list[int]:
    c = model_config
    return [c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_kv_head * c.head_dim] if parts == 3 else []


def to_peft(tensors: dict[str, torch.Tensor], model_config) -> dict[str, torch.Tensor]:
    """lmforge's trained tensors (`lora.trained_tensors`) -> PEFT's names."""
    mapping, out = module_map(model_config), {}
    for name, t in tensors.items():
        module, _, leaf = name.rpartition(".")
        if leaf not in HALVES:
            out[PREFIX + name] = t
            continue
        targets = mapping.get(module, [module])
        pieces = t.split(_splits(model_config, len(targets)), 0) if leaf == "lora_B" and len(targets) > 1 \
            else [t] * len(targets)
        out.update({f"{PREFIX}{m}.{leaf}.weight": p.contiguous().clone() for m, p in zip(targets, pieces)})  # own copies
    return out


def from_peft(tensors: dict[str, torch.Tensor], model_config) -> dict[str, torch.Tensor]:
    """PEFT's names -> lmforge's: {module.lora_A / .lora_B: tensor} and the fully trained parts."""
    inverse = {h: (lm, i, len(hs)) for lm, hs in module_map(model_config).items() for i, h in enumerate(hs)}
    halves: dict[str, dict[str, list]] = {}
    out = {}
    for key, t in tensors.items():
        if not key.startswith(PREFIX):
            raise LmforgeError(f"the adapter holds {key}, which is not a PEFT name (base_model.model....)")
        name = key[len(PREFIX):]
        leaf = next((h for h in HALVES if name.endswith(f".{h}.weight")), None)
        if leaf is None:
            out[name] = t
            continue
        hf_module = name[:-len(f".{leaf}.weight")]
        lm, i, n = inverse.get(hf_module, (hf_module, 0, 1))
        halves.setdefault(lm, {"lora_A": [None] * n, "lora_B": [None] * n})[leaf][i] = t
    for lm, h in halves.items():
        if any(t is None for t in h["lora_A"] + h["lora_B"]):
            raise LmforgeError(f"the adapter has only part of the LoRA tensors of {lm}; it is incomplete")
        a, b = h["lora_A"], h["lora_B"]
        if all(torch.equal(a[0], x) for x in a[1:]):
            out[f"{lm}.lora_A"], out[f"{lm}.lora_B"] = a[0], torch.cat(b, 0)
        else:  # separate A per module: one layer of rank len(a) * r, block-diagonal B
            out[f"{lm}.lora_A"], out[f"{lm}.lora_B"] = torch.cat(a, 0), torch.block_diag(*b)
    return out


def adapter_config(model_config, rank: int, alpha: float, dropout: float, base: str,
                   tensors: dict[str, torch.Tensor]) -> dict:
    """adapter_config.json as PEFT writes it for a LoRA on these modules."""
    adapted = sorted({k[len(PREFIX):].rsplit(".", 2)[0].rsplit(".", 1)[-1] for k in tensors if ".lora_A." in k})
    whole = sorted({k[len(PREFIX):].rsplit(".", 1)[0].rsplit(".", 1)[-1] for k in tensors if ".lora_" not in k})
    gpt2 = bool(module_map(model_config)) and model_config.position == "learned"
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM" if model_config.family == "gpt" and not whole else None,
            "base_model_name_or_path": base, "r": rank, "lora_alpha": alpha, "lora_dropout": dropout,
            "target_modules": adapted, "modules_to_save": whole or None, "fan_in_fan_out": gpt2, "bias": "none",
            "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False}
