"""The Hugging Face mapping of BERT, both ways: `BertModel`, `BertForPreTraining`, `BertForMaskedLM` load into
`Bert`; `BertForSequenceClassification`, `BertForTokenClassification` and `BertForQuestionAnswering` load
into a `TaskModel` (models/heads.py) over a Bert. Export writes the same shapes back. The mapping
({i} = layer; a bare `BertModel` saves its tensors without the `bert.` prefix):

    Hugging Face                                               lmforge Bert
    bert.embeddings.word_embeddings.weight                     embeddings.tok.weight
    bert.embeddings.position_embeddings.weight                 embeddings.pos.weight
    bert.embeddings.token_type_embeddings.weight               embeddings.seg.weight
    bert.embeddings.LayerNorm.*                                embeddings.norm.*
    bert.encoder.layer.{i}.attention.self.{query,key,value}.*  blocks.{i}.attn.qkv.*   (rows q|k|v)
    bert.encoder.layer.{i}.attention.output.dense.*            blocks.{i}.attn.proj.*
    bert.encoder.layer.{i}.attention.output.LayerNorm.*        blocks.{i}.norm1.*      (post-norm: after the sum)
    bert.encoder.layer.{i}.intermediate.dense.*                blocks.{i}.mlp.fc.*
    bert.encoder.layer.{i}.output.dense.*                      blocks.{i}.mlp.proj.*
    bert.encoder.layer.{i}.output.LayerNorm.*                  blocks.{i}.norm2.*
    bert.pooler.dense.*                                        pooler.*
    cls.predictions.transform.dense.*                          mlm_head.dense.*
    cls.predictions.transform.LayerNorm.*                      mlm_head.norm.*
    cls.predictions.bias                                       mlm_head.bias   (decoder tied to word_embeddings)
    cls.seq_relationship.*                                     nsp_head.*
    classifier.* | qa_outputs.*                                head.*          (the Bert above sits under base.*)

The pooler and the pretraining heads are optional: a checkpoint without them (MiniLM has no MLM head)
keeps their fresh initialisation, and `hf.load_hf` says which.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.models.hf.common import activation_from_hf, read_values, unsupported
from lmforge.models.hf.io import HFExport

MODEL_TYPES = {"bert": "Bert"}  # model_type -> the architecture class prefix naming it
FAMILIES = ("bert", "electra")  # an ELECTRA is refused by name (hf_architecture), not as an unknown family
TASKS = {"BertForSequenceClassification": ("classify", "classifier"),  # architecture -> (our head, HF name)
         "BertForTokenClassification": ("token", "classifier"), "BertForQuestionAnswering": ("qa", "qa_outputs")}
OPTIONAL = ("pooler", "mlm head", "nsp head")  # groups a checkpoint may leave out
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
DECODER = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")  # tied copies, not stored by us


# ModelConfig field -> (config.json key, default), as transformers' BertConfig names them
KEYS = {"vocab_size": ("vocab_size", 30522), "context_length": ("max_position_embeddings", 512),
        "n_layer": ("num_hidden_layers", 12), "n_head": ("num_attention_heads", 12), "d_model": ("hidden_size", 768),
        "d_ff": ("intermediate_size", 3072), "dropout": ("hidden_dropout_prob", 0.1),
        "norm_eps": ("layer_norm_eps", 1e-12), "init_std": ("initializer_range", 0.02),
        "type_vocab_size": ("type_vocab_size", 2)}
MAX_LABELS = 2**16


def _unsupported(what: str) -> LmforgeError:
    return unsupported(what, "BERT", "a plain BERT checkpoint")


# --- config -------------------------------------------------------------------------------------------
def config_from_hf(hf: dict) -> ModelConfig:
    """A transformers BertConfig (as a dict) -> the ModelConfig of the same network (and its task head)."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise _unsupported(f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute' is supported)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise _unsupported("is_decoder or add_cross_attention (a causal or cross-attending BERT)")
    act = activation_from_hf(hf.get("hidden_act", "gelu"), "hidden_act", False, "BERT", "a plain BERT checkpoint")
    archs = hf.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs else "BertModel"
    head = TASKS.get(arch, ("none", None))[0]
    labels = _labels(hf) if head in ("classify", "token") else []
    if head in ("classify", "token") and len(labels) < 2:
        raise _unsupported(f"{len(labels)} label (regression), while lmforge's {head} head needs two or more")
    return ModelConfig(family="bert", **read_values(hf, KEYS), position="learned", norm="layernorm",
                       norm_position="post", activation=act, bias=True, causal=False, head=head, labels=labels)


def _labels(hf: dict) -> list[str]:
    """The class names of a classifier: id2label in id order, else LABEL_0 .. for num_labels classes."""
    id2label, n = hf.get("id2label"), hf.get("num_labels", 2)
    if id2label is None:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_LABELS:
            raise LmforgeError(f"config.json's num_labels={n!r} must be a whole number from 0 to {MAX_LABELS:,}")
        id2label = {str(i): f"LABEL_{i}" for i in range(n)}
    if not isinstance(id2label, dict) or len(id2label) > MAX_LABELS:
        raise LmforgeError(f"config.json's id2label must map at most {MAX_LABELS:,} class ids to names; fix config.json")
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]


def hf_architecture(cfg: ModelConfig) -> str:
    """The transformers class `cfg` exports as, or an LmforgeError naming the first setting BERT lacks."""
    want = dict(family="bert", causal=False, norm_position="post", position="learned", norm="layernorm",
                bias=True, activation="gelu", n_kv_head=cfg.n_head, embedding_size=cfg.d_model)
    for key, value in want.items():
        if getattr(cfg, key) != value:
            raise LmforgeError(f"model.{key}={getattr(cfg, key)!r} has no equivalent in a Hugging Face BERT model "
                               f"(which needs {key}={value!r}); only BERT-shaped encoders export")
    if cfg.head == "none":
        return "BertForPreTraining"
    return next(arch for arch, (head, _) in TASKS.items() if head == cfg.head)


def config_to_hf(cfg: ModelConfig, special_ids: dict[str, int], dtype: torch.dtype = torch.float32) -> dict:
    """The transformers config.json of `cfg`; special_ids maps pad (and others) to token ids."""
    out = {"architectures": [hf_architecture(cfg)], "model_type": "bert", "vocab_size": cfg.vocab_size,
           "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
           "intermediate_size": cfg.d_ff, "hidden_act": "gelu", "hidden_dropout_prob": cfg.dropout,
           "attention_probs_dropout_prob": cfg.dropout, "max_position_embeddings": cfg.context_length,
           "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.norm_eps, "initializer_range": cfg.init_std,
           "position_embedding_type": "absolute", "is_decoder": False, "tie_word_embeddings": True,
           "pad_token_id": special_ids.get("pad"), "torch_dtype": str(dtype).removeprefix("torch.")}
    if cfg.labels:
        out["id2label"] = dict(enumerate(cfg.labels))
        out["label2id"] = {label: i for i, label in enumerate(cfg.labels)}
    return out


# --- weights --------------------------------------------------------------------------------------------
def _names(cfg: ModelConfig) -> list[tuple[str, list[str], str]]:
    """(group, HF names, lmforge name) for every tensor; several HF names are stacked along dim 0."""
    lin = ("weight", "bias")
    emb = [("word_embeddings", "tok", ("weight",)), ("position_embeddings", "pos", ("weight",)),
           ("token_type_embeddings", "seg", ("weight",)), ("LayerNorm", "norm", lin)]
    layer = [("attention.self.query|attention.self.key|attention.self.value", "attn.qkv"),
             ("attention.output.dense", "attn.proj"), ("attention.output.LayerNorm", "norm1"),
             ("intermediate.dense", "mlp.fc"), ("output.dense", "mlp.proj"), ("output.LayerNorm", "norm2")]
    out = [("base", [f"bert.embeddings.{h}.{s}"], f"embeddings.{m}.{s}") for h, m, sfx in emb for s in sfx]
    for i in range(cfg.n_layer):
        out += [("base", [f"bert.encoder.layer.{i}.{h}.{s}" for h in hs.split("|")], f"blocks.{i}.{m}.{s}")
                for hs, m in layer for s in lin]
    out += [("pooler", [f"bert.pooler.dense.{s}"], f"pooler.{s}") for s in lin]
    if cfg.head != "none":
        hf_head = next(name for head, name in TASKS.values() if head == cfg.head)
        return [(g, h, f"base.{m}") for g, h, m in out] + [("head", [f"{hf_head}.{s}"], f"head.{s}") for s in lin]
    out += [("mlm head", [f"cls.predictions.transform.{h}.{s}"], f"mlm_head.{m}.{s}")
            for h, m in (("dense", "dense"), ("LayerNorm", "norm")) for s in lin]
    out += [("mlm head", ["cls.predictions.bias"], "mlm_head.bias")]
    return out + [("nsp head", [f"cls.seq_relationship.{s}"], f"nsp_head.{s}") for s in lin]


def state_dict_from_hf(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and stack q|k|v) a transformers BERT state dict into our names; also the optional groups
    (pooler, mlm head, nsp head) the checkpoint does not hold, which keep their fresh initialisation."""
    def key(name: str) -> str:
        return name if name in hf or not name.startswith("bert.") else name.removeprefix("bert.")

    names = _names(cfg)
    absent: dict[str, list[str]] = {}  # group -> its HF names the checkpoint lacks
    for g, hf_names, _ in names:
        absent.setdefault(g, []).extend(n for n in hf_names if key(n) not in hf)
    missing = [g for g, lacking in absent.items() if lacking]
    for g in missing:
        if g not in OPTIONAL or len(absent[g]) < sum(len(ns) for grp, ns, _ in names if grp == g):
            raise LmforgeError(f"the checkpoint has no tensor {absent[g][0]}; it is incomplete or not the model "
                               "its config.json describes")
    if cfg.head == "none" and "mlm head" not in missing and cfg.activation != "gelu":
        raise _unsupported(f"an MLM head with {cfg.activation} (lmforge's MLM head uses exact gelu)")
    sd, used = {}, set()
    for g, hf_names, lm in names:
        if g not in missing:
            sd[lm] = torch.cat([hf[key(n)] for n in hf_names], dim=0) if len(hf_names) > 1 else hf[key(hf_names[0])]
            used.update(key(n) for n in hf_names)
    tok = sd["base.embeddings.tok.weight" if cfg.head != "none" else "embeddings.tok.weight"]
    if DECODER[0] in hf and not tok.is_meta and not torch.equal(hf[DECODER[0]], tok):
        raise _unsupported("an MLM decoder that is not tied to the word embeddings")
    extra = [k for k in hf if k not in used and k not in DECODER and not k.endswith("embeddings.position_ids")]
    if extra:
        raise LmforgeError(f"the checkpoint holds {extra[0]}, which lmforge's Bert does not have; "
                           "lmforge loads BertModel, BertForPreTraining, BertForMaskedLM and the BertFor* task models")
    return sd, missing


def state_dict_to_hf(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of a Bert (or a TaskModel over one) under transformers names, as contiguous copies."""
    cfg, sd = model.config, model.state_dict()
    out = {}
    for _, hf_names, lm in _names(cfg):
        t = sd[lm].detach()
        parts = t.chunk(3, dim=0) if len(hf_names) == 3 else [t]
        out.update({n: p.cpu().contiguous().clone() for n, p in zip(hf_names, parts)})
    return out


def keep_fresh(cfg: ModelConfig, absent: list[str]) -> tuple[str, ...]:
    """Prefixes of the parameters that keep their fresh initialisation: the optional parts the checkpoint
    lacks, and a task model's pretraining heads (its Bert has them; a BertFor* task checkpoint does not)."""
    return ("base.mlm_head.", "base.nsp_head.", *(lm for g, _, lm in _names(cfg) if g in absent))


# --- export ---------------------------------------------------------------------------------------------
def with_bert_specials(tokenizer_json: str, specials: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """`specials` (role -> (token, id)) plus BERT's [PAD] [UNK] [CLS] [SEP] [MASK] where the tokenizer has
    them as added tokens and no other token holds that role."""
    added = {t.get("content"): t.get("id") for t in json.loads(tokenizer_json).get("added_tokens") or []}
    out = dict(specials)
    for role, token in BERT_SPECIALS.items():
        if role not in out and isinstance(added.get(token), int):
            out[role] = (token, added[token])
    return out


def with_bert_template(tokenizer_json: str, specials: dict[str, tuple[str, int]]) -> str:
    """tokenizer.json with BERT's post-processor, [CLS] A [SEP] and [CLS] A [SEP] B [SEP] (segment 0,
    then 1), where it has none: lmforge frames every encoder input so, and AutoTokenizer then does too."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_str(tokenizer_json)
    if tok.post_processor is not None or "cls" not in specials or "sep" not in specials:
        return tokenizer_json
    (cls, cls_id), (sep, sep_id) = specials["cls"], specials["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, cls_id), (sep, sep_id)])
    return tok.to_str()


def export(model: nn.Module, tokenizer_json: str | None, specials: dict[str, tuple[str, int]],
           chat_template: str | list | None = None, end_ids: tuple[int, ...] = (),
           dtype: torch.dtype | None = None) -> HFExport:
    """A Bert (or a TaskModel over one) as a BERT directory's contents, in the model's own dtype, that
    `AutoModel`, the BertFor* class in config.json, and `AutoTokenizer` read. An encoder has no chat
    template or end ids; those are ignored."""
    if tokenizer_json is not None:
        specials = with_bert_specials(tokenizer_json, specials)
        tokenizer_json = with_bert_template(tokenizer_json, specials)
    cfg = model.config
    hf_config = config_to_hf(cfg, {r: i for r, (_, i) in specials.items()}, next(model.parameters()).dtype)
    return HFExport(hf_config, state_dict_to_hf(model), cfg.context_length, tokenizer_json=tokenizer_json,
                    specials=specials,
                    tokenizer_settings={"model_input_names": ["input_ids", "token_type_ids", "attention_mask"]})
