"""The Hugging Face mapping of GPT-2 (`GPT2LMHeadModel`) and Llama (`LlamaForCausalLM`), both ways.

Both load into `GPT`; a GPT whose config is one of the two shapes exports to a directory that
`transformers.AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` read. The mapping ({i} = layer):

    Hugging Face GPT-2                   Hugging Face Llama                        lmforge GPT
    transformer.wte.weight               model.embed_tokens.weight                 tok_emb.weight
    transformer.wpe.weight               (RoPE, no table)                          pos_emb.weight
    transformer.h.{i}.ln_1.*             model.layers.{i}.input_layernorm.*        blocks.{i}.norm1.*
    transformer.h.{i}.attn.c_attn.*  T   model.layers.{i}.self_attn.{q,k,v}_proj.* blocks.{i}.attn.qkv.*  (rows q|k|v)
    transformer.h.{i}.attn.c_proj.*  T   model.layers.{i}.self_attn.o_proj.*       blocks.{i}.attn.proj.*
    transformer.h.{i}.ln_2.*             model.layers.{i}.post_attention_layernorm.* blocks.{i}.norm2.*
    transformer.h.{i}.mlp.c_fc.*     T   model.layers.{i}.mlp.gate_proj.*          blocks.{i}.mlp.fc.* / mlp.gate.*
                                         model.layers.{i}.mlp.up_proj.*            blocks.{i}.mlp.up.*
    transformer.h.{i}.mlp.c_proj.*   T   model.layers.{i}.mlp.down_proj.*          blocks.{i}.mlp.proj.*
    transformer.ln_f.*                   model.norm.*                              norm.*
    lm_head.weight (absent when tied)    lm_head.weight (absent when tied)         lm_head.weight

T: GPT-2's Conv1D stores (in, out), the transpose of nn.Linear's (out, in). Llama's q/k rows are
already in the rotate-half RoPE layout that `lmforge.nn.apply_rope` uses, so they copy unchanged.
"""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.gpt import GPT
from lmforge.models.hf.common import GATED, TO_HF, activation_from_hf, model_type, read_values, unsupported
from lmforge.models.hf.io import HFExport

MODEL_TYPES = {"gpt2": "GPT2", "llama": "Llama"}  # model_type -> the architecture class prefix naming it
FAMILIES = ("gpt",)
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")  # buffers old checkpoints saved
GPT2_SHAPE = dict(position="learned", norm="layernorm", bias=True)
LLAMA_SHAPE = dict(position="rope", norm="rmsnorm", activation="swiglu")
# ModelConfig field -> (config.json key, default), as transformers' GPT2Config / LlamaConfig name them
GPT2_KEYS = {"vocab_size": ("vocab_size", 50257), "context_length": ("n_positions", 1024), "n_layer": ("n_layer", 12),
             "n_head": ("n_head", 12), "d_model": ("n_embd", 768), "d_ff": ("n_inner", None),
             "dropout": ("resid_pdrop", 0.1), "norm_eps": ("layer_norm_epsilon", 1e-5),
             "tie_embeddings": ("tie_word_embeddings", True), "init_std": ("initializer_range", 0.02)}
LLAMA_KEYS = {"vocab_size": ("vocab_size", 32000), "context_length": ("max_position_embeddings", 2048),
              "n_layer": ("num_hidden_layers", 32), "n_head": ("num_attention_heads", 32),
              "n_kv_head": ("num_key_value_heads", None), "d_model": ("hidden_size", 4096),
              "d_ff": ("intermediate_size", 11008), "dropout": ("attention_dropout", 0.0),
              "rope_theta": ("rope_theta", 10000.0), "norm_eps": ("rms_norm_eps", 1e-6),
              "tie_embeddings": ("tie_word_embeddings", False), "init_std": ("initializer_range", 0.02)}


# --- config -------------------------------------------------------------------------------------------
def config_from_hf(hf: dict) -> ModelConfig:
    """A transformers GPT-2 or Llama config.json (as a dict) -> the ModelConfig of the same network."""
    return gpt2_config(hf) if model_type(hf, MODEL_TYPES) == "gpt2" else llama_config(hf)


def gpt2_config(hf: dict) -> ModelConfig:
    if hf.get("add_cross_attention") or hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise unsupported("cross-attention or non-standard attention scaling")
    act = activation_from_hf(hf.get("activation_function", "gelu_new"), "activation_function", gated=False)
    return ModelConfig(**read_values(hf, GPT2_KEYS), activation=act, **GPT2_SHAPE)


def llama_config(hf: dict) -> ModelConfig:
    rope, scaling = hf.get("rope_parameters") or {}, hf.get("rope_scaling") or {}
    if not isinstance(rope, dict) or not isinstance(scaling, dict):
        raise unsupported("rope_parameters or rope_scaling that is not a mapping")
    scaled = {rope.get("rope_type", "default"), scaling.get("rope_type", scaling.get("type", "default"))} - {"default"}
    if scaled:
        raise unsupported(f"RoPE scaling ({scaled.pop()!r})")
    activation_from_hf(hf.get("hidden_act", "silu"), "hidden_act", gated=True)
    if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
        raise unsupported("attention_bias different from mlp_bias (lmforge has one bias switch)")
    values = read_values({**hf, **({"rope_theta": rope["rope_theta"]} if "rope_theta" in rope else {})}, LLAMA_KEYS)
    if hf.get("head_dim") not in (None, values["d_model"] // values["n_head"]):
        raise unsupported(f"head_dim={hf['head_dim']} different from hidden_size / num_attention_heads")
    return ModelConfig(**values, bias=bool(hf.get("attention_bias", False)), **LLAMA_SHAPE)


def hf_shape(cfg: ModelConfig) -> str:
    """'gpt2' or 'llama', or an LmforgeError naming the first setting with no Hugging Face equivalent."""
    fixed = dict(family="gpt", causal=True, norm_position="pre")
    if cfg.family == "gpt" and cfg.head != "none":
        raise LmforgeError(f"this GPT carries a fine-tuned {cfg.head!r} head, and export writes causal language models "
                           "(GPT2LMHeadModel, LlamaForCausalLM); export the pretrained run it was fine-tuned from")
    if cfg.position == "learned":
        kind, want = "gpt2", {**fixed, **GPT2_SHAPE, "n_kv_head": cfg.n_head}
        if cfg.activation in GATED:
            want["activation"] = "gelu_tanh"
    elif cfg.position == "rope":
        kind, want = "llama", {**fixed, **LLAMA_SHAPE}
    else:
        raise LmforgeError(f"model.position={cfg.position!r} has no Hugging Face equivalent; export supports the GPT-2 "
                           "shape (learned positions, LayerNorm) and the Llama shape (RoPE, RMSNorm, SwiGLU)")
    for key, value in want.items():
        if getattr(cfg, key) != value:
            raise LmforgeError(f"model.{key}={getattr(cfg, key)!r} has no equivalent in a Hugging Face {kind} model "
                               f"(which needs {key}={value!r}); only GPT-2- and Llama-shaped models export")
    return kind


def config_to_hf(cfg: ModelConfig, special_ids: dict[str, int], dtype: torch.dtype = torch.float32) -> dict:
    """The transformers config.json of `cfg`; special_ids maps bos/eos/pad to token ids."""
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": cfg.init_std,
              "torch_dtype": str(dtype).removeprefix("torch."), "use_cache": True,
              **{f"{r}_token_id": special_ids.get(r) for r in ("bos", "eos", "pad")}}
    if hf_shape(cfg) == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": cfg.context_length,
                "n_embd": cfg.d_model, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.d_ff,
                "activation_function": TO_HF[cfg.activation], "layer_norm_epsilon": cfg.norm_eps, "scale_attn_weights": True,
                **{k: cfg.dropout for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}, **common}
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.d_model,
            "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim, "hidden_act": "silu",
            "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta, "rope_scaling": None,  # transformers 4.x reads these two,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # 5.x this one
            "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": cfg.dropout, **common}


# --- weights --------------------------------------------------------------------------------------------
def _names(cfg: ModelConfig) -> list[tuple[list[str], str, bool]]:
    """(HF names, lmforge name, HF stores it transposed) for every tensor; several HF names are stacked."""
    llama = hf_shape(cfg) == "llama"
    lin = ["weight", "bias"] if cfg.bias else ["weight"]
    norm = ["weight"] if llama else lin  # RMSNorm has no bias; GPT-2 always has biases
    if llama:
        top, layer = "model.", "model.layers.{i}."
        tops = [("embed_tokens", "tok_emb", ["weight"]), ("norm", "norm", norm)]
        parts = [("input_layernorm", "norm1", norm), ("self_attn.q_proj|self_attn.k_proj|self_attn.v_proj", "attn.qkv", lin),
                 ("self_attn.o_proj", "attn.proj", lin), ("post_attention_layernorm", "norm2", norm),
                 ("mlp.gate_proj", "mlp.gate", lin), ("mlp.up_proj", "mlp.up", lin), ("mlp.down_proj", "mlp.proj", lin)]
    else:
        top, layer = "transformer.", "transformer.h.{i}."
        tops = [("wte", "tok_emb", ["weight"]), ("wpe", "pos_emb", ["weight"]), ("ln_f", "norm", norm)]
        parts = [("ln_1", "norm1", norm), ("attn.c_attn", "attn.qkv", lin), ("attn.c_proj", "attn.proj", lin),
                 ("ln_2", "norm2", norm), ("mlp.c_fc", "mlp.fc", lin), ("mlp.c_proj", "mlp.proj", lin)]
    out = [([f"{top}{hf}.{s}"], f"{lm}.{s}", False) for hf, lm, sfx in tops for s in sfx]
    for i in range(cfg.n_layer):
        for hf, lm, sfx in parts:
            conv = not llama and not lm.startswith("norm")  # GPT-2's Conv1D
            out += [([layer.format(i=i) + f"{h}.{s}" for h in hf.split("|")], f"blocks.{i}.{lm}.{s}", conv and s == "weight")
                    for s in sfx]
    if not cfg.tie_embeddings:
        out.append((["lm_head.weight"], "lm_head.weight", False))
    return out


def state_dict_from_hf(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and transpose / stack) a transformers state dict into GPT's parameter names; every part is
    needed (no optional parts absent)."""
    used, sd = set(), {}
    for hf_names, lm, transposed in _names(cfg):
        parts = []
        for name in hf_names:
            key = name if name in hf else name.split(".", 1)[1]  # a bare base model saves no "transformer." prefix
            if key not in hf:
                raise LmforgeError(f"the checkpoint has no tensor {name}; it is incomplete or not the model its config.json describes")
            parts.append(hf[key].t() if transposed else hf[key])
            used.add(key)
        sd[lm] = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    extra = [k for k in hf if k not in used and not k.endswith(IGNORED_SUFFIXES)
             and not (cfg.tie_embeddings and k == "lm_head.weight")]
    if extra:
        raise LmforgeError(f"the checkpoint holds {extra[0]}, which its config.json does not explain; "
                           "lmforge loads plain GPT-2 and Llama checkpoints")
    return sd, []


def keep_fresh(cfg: ModelConfig, absent: list[str]) -> tuple[str, ...]:
    return ()


def state_dict_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """GPT's parameters under transformers names (contiguous copies, no shared storage)."""
    cfg, sd = model.config, model.state_dict()
    H, G, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    out = {}
    for hf_names, lm, transposed in _names(cfg):
        t = sd[lm].detach()
        parts = t.split([H * D, G * D, G * D], dim=0) if len(hf_names) == 3 else [t.t() if transposed else t]
        out.update({n: p.cpu().contiguous().clone() for n, p in zip(hf_names, parts)})
    return out


# --- export ---------------------------------------------------------------------------------------------
def export(model: GPT, tokenizer_json: str | None, specials: dict[str, tuple[str, int]],
           chat_template: str | list | None = None, end_ids: tuple[int, ...] = (),
           dtype: torch.dtype | None = None) -> HFExport:
    """A GPT as a GPT-2 or Llama directory's contents; end_ids, when there are several, become the
    eos_token_id list (Llama 3's end-of-text and end-of-turn); dtype (default: the model's) is the one
    the weights are stored in; chat_template (Jinja, or transformers' list of named ones) goes in
    tokenizer_config.json."""
    cfg = model.config
    dtype = dtype or next(model.parameters()).dtype
    hf_config = config_to_hf(cfg, {role: i for role, (_, i) in specials.items()}, dtype)  # refuses first
    if len(end_ids) > 1:
        hf_config["eos_token_id"] = list(end_ids)
    generation = {k: v for k, v in hf_config.items() if k.endswith("_token_id") and v is not None}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict_to_hf(model).items()}
    return HFExport(hf_config, tensors, cfg.context_length, {"generation_config.json": generation}, tokenizer_json,
                    specials, {"chat_template": chat_template} if chat_template else {})
