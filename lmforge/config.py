"""Configuration: one `ModelConfig` for every model family, named presets, and the run recipe.

A recipe (YAML) has up to four sections, each a dataclass below:

    model: {preset: gpt-mini, n_layer: 4, ...}   # a preset plus field overrides -> ModelConfig
    data:  {corpus: shakespeare, tokenizer: bpe, vocab_size: 4096, ...}        -> DataConfig
    train: {max_steps: 2000, lr: 1e-3, batch_size: 12, ...}                    -> TrainConfig
    task:  {kind: classify, base: RUN, data: rows.csv, epochs: 3, ...}         -> TaskConfig (fine-tuning)

Pretraining and fine-tuning read the same Recipe: a fine-tuning recipe starts from the shipped
`finetune` recipe (its train: defaults suit fine-tuning) and its run saves the whole recipe as
recipe.yaml. `lmforge train --set train.lr=3e-4 --set model.n_layer=2` overrides any field by its
dotted name; `lmforge finetune --lr 1e-5` is a shorthand for `--set train.lr=1e-5` (SHORTHANDS).
Unknown keys are errors that list the valid ones, so a typo never silently does nothing. An error
about one value carries its key as `LmforgeError.field`, so each front door names it its own way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import yaml

from lmforge.errors import LmforgeError


@dataclass
class ModelConfig:
    """The shape of a Transformer. Every family (GPT, Llama-style, BERT, ELECTRA, encoder-decoder) reads this."""

    family: str = "gpt"  # gpt | bert | electra | seq2seq
    vocab_size: int = 8192
    context_length: int = 256
    n_layer: int = 6  # seq2seq: the encoder's layers
    n_decoder_layer: int | None = None  # seq2seq: the decoder's layers; None: n_layer
    n_head: int = 6
    n_kv_head: int | None = None  # < n_head: grouped-query attention; None: same as n_head
    d_model: int = 384
    d_ff: int | None = None  # None: 4 * d_model (GELU) or the Llama rule (SwiGLU)
    dropout: float = 0.0
    position: str = "learned"  # learned | sinusoidal | rope | t5 (relative buckets) | none
    rope_theta: float = 10000.0
    sinusoidal_layout: str = "interleaved"  # sinusoidal positions: interleaved sin, cos (Vaswani et al.) | halves (Marian)
    relative_buckets: int = 32  # t5 positions: buckets of key - query distance (half exact, half log-spaced)
    relative_max_distance: int = 128  # t5 positions: distances beyond this share the last bucket
    attention_scale: float | None = None  # the factor on Q K^T; None: 1 / sqrt(head size); T5: 1 (folded into W_q)
    embed_scale: bool = False  # multiply token embeddings by sqrt(d_model) (Vaswani et al.; Marian)
    embed_norm: bool = False  # a norm right after the embeddings (BERT has its own; BART's layernorm_embedding)
    tied_output_scale: bool = False  # T5: hidden states times d_model ** -0.5 before a tied output projection
    logits_bias: bool = False  # a fixed per-token bias added to the logits (BART / Marian final_logits_bias)
    decoder_start_id: int = 0  # seq2seq: the token the decoder starts from (T5, Marian: pad; BART: eos)
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    norm_position: str = "pre"  # pre (GPT-2, Llama) | post (original Transformer, BERT)
    activation: str = "gelu"  # gelu | gelu_tanh | relu | silu (Marian's swish) | swiglu | geglu (T5 v1.1's gated GELU)
    bias: bool = True
    tie_embeddings: bool = True
    causal: bool = True
    init_std: float = 0.02
    type_vocab_size: int = 2  # BERT: segment (token type) embeddings, sentence A = 0, B = 1
    embedding_size: int | None = None  # None: d_model; else factorised embeddings projected to d_model
    generator_scale: float = 0.25  # ELECTRA: the generator's width (and heads) as a fraction of the discriminator's
    rtd_weight: float = 50.0  # ELECTRA: lambda in L = L_MLM(generator) + lambda * L_RTD(discriminator)
    head: str = "none"  # a task head over the model: none | classify | token | qa (models/heads.py)
    labels: list[str] = field(default_factory=list)  # the head's class names (classify, token)

    # Upper bounds on each size: far above any real model, low enough that a typo or a hostile
    # config.json (10^6 layers, a 2*10^9 vocabulary) is refused before anything is allocated.
    LIMITS: ClassVar[dict[str, int]] = {
        "vocab_size": 2**24, "context_length": 2**20, "n_layer": 4096, "n_head": 2**14, "n_kv_head": 2**14,
        "d_model": 2**16, "d_ff": 2**20, "type_vocab_size": 2**16, "embedding_size": 2**16,
        "n_decoder_layer": 4096, "relative_buckets": 2**16, "relative_max_distance": 2**20,
    }
    MAX_PARAMS: ClassVar[int] = 2**40  # about 10^12
    FLOATS: ClassVar[tuple[str, ...]] = ("dropout", "rope_theta", "norm_eps", "init_std", "generator_scale",
                                         "rtd_weight", "attention_scale")
    BOOLS: ClassVar[tuple[str, ...]] = ("bias", "tie_embeddings", "causal", "embed_scale", "embed_norm",
                                        "tied_output_scale", "logits_bias")

    def __post_init__(self) -> None:
        self.check_values({k: getattr(self, k) for k in (*self.LIMITS, *self.FLOATS, *self.BOOLS)
                           if getattr(self, k) is not None})  # before any arithmetic on them
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        if self.embedding_size is None:
            self.embedding_size = self.d_model
        if not isinstance(self.labels, (list, tuple)):
            raise LmforgeError(f"model.labels={self.labels!r} must be a list of class names")
        self.labels = [str(label) for label in self.labels]
        if self.d_ff is None:
            if self.activation in ("swiglu", "geglu"):  # Llama: 2/3 of 4d, rounded up to a multiple of 64
                self.d_ff = 64 * ((int(8 * self.d_model / 3) + 63) // 64)
            else:
                self.d_ff = 4 * self.d_model
        self.validate()

    @classmethod
    def check_values(cls, values: dict[str, Any], name: Callable[[str], str] = "model.{}".format) -> None:
        """The type and range of each size, float and switch in `values` (ModelConfig field -> value), each
        error naming the key by `name(field)`, so a Hugging Face config.json is told its own key names:
        sizes are whole numbers in [1, LIMITS], floats finite (rope_theta and norm_eps > 0, the others
        >= 0), switches true or false."""
        for key, value in values.items():
            where = f"{name(key)}={value!r}"
            if key in cls.BOOLS and not isinstance(value, bool):
                raise LmforgeError(f"{where} must be true or false")
            if key in cls.LIMITS:
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise LmforgeError(f"{where} must be a whole number, not {type(value).__name__}")
                if not 1 <= value <= cls.LIMITS[key]:
                    raise LmforgeError(f"{where} must be between 1 and {cls.LIMITS[key]:,}")
            if key in cls.FLOATS:
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                    raise LmforgeError(f"{where} must be a finite number")
                if value < 0 or (value == 0 and key in ("rope_theta", "norm_eps")):
                    raise LmforgeError(f"{where} must be {'positive' if key in ('rope_theta', 'norm_eps') else '0 or more'}")

    def validate(self) -> None:
        choices = {
            "position": ("learned", "sinusoidal", "rope", "t5", "none"),
            "norm": ("layernorm", "rmsnorm"),
            "norm_position": ("pre", "post"),
            "activation": ("gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu"),
            "sinusoidal_layout": ("interleaved", "halves"),
            "family": ("gpt", "bert", "electra", "seq2seq"),
            "head": ("none", "classify", "token", "qa"),
        }
        for name, allowed in choices.items():
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in allowed:
                raise LmforgeError(
                    f"model.{name}={getattr(self, name)!r} is not supported; use one of {', '.join(allowed)}"
                )
        self.check_values({k: getattr(self, k) for k in (*self.LIMITS, *self.FLOATS, *self.BOOLS)
                           if k != "attention_scale" or self.attention_scale is not None})
        if self.d_model % self.n_head:
            raise LmforgeError(
                f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}; pick sizes where it is"
            )
        if self.n_head % self.n_kv_head:
            raise LmforgeError(
                f"model.n_head={self.n_head} is not a multiple of model.n_kv_head={self.n_kv_head}; "
                "grouped-query attention shares each key/value head among an equal number of query heads"
            )
        if self.position == "rope" and (self.d_model // self.n_head) % 2:
            raise LmforgeError("RoPE needs an even head size (d_model / n_head); change d_model or n_head")
        if not 0.0 <= self.dropout < 1.0:
            raise LmforgeError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.approx_params() > self.MAX_PARAMS:
            raise LmforgeError(f"model.n_layer={self.n_layer}, d_model={self.d_model}, d_ff={self.d_ff} and "
                               f"vocab_size={self.vocab_size} make about {self.approx_params():.1e} parameters, more "
                               f"than lmforge builds ({self.MAX_PARAMS:.1e}); choose smaller sizes")
        if self.family != "gpt" and self.causal:
            what = "has a bidirectional encoder (its decoder is causal anyway)" if self.family == "seq2seq" else \
                "is a bidirectional encoder"
            raise LmforgeError(f"model.family={self.family} {what}; set model.causal=false")
        if self.position == "t5" and self.family != "seq2seq":
            raise LmforgeError(f"model.position=t5 (relative buckets) is for encoder-decoder models, not "
                               f"{self.family}; use learned positions")
        if not 0 <= self.decoder_start_id < self.vocab_size:
            raise LmforgeError(f"model.decoder_start_id={self.decoder_start_id} is not a token of the vocabulary of "
                               f"{self.vocab_size}; give the id the decoder starts from")
        if self.family == "seq2seq" and (self.position == "rope" or self.head != "none"):
            setting = "model.position=rope" if self.position == "rope" else f"model.head={self.head}"
            raise LmforgeError(f"{setting} is not supported for encoder-decoder models; use t5, learned or "
                               "sinusoidal positions and no head")
        if self.family == "electra" and self.generator_width_heads()[0] < 1:
            raise LmforgeError(f"model.generator_scale={self.generator_scale} leaves the ELECTRA generator no width; raise it")
        if self.head in ("classify", "token") and len(self.labels) < 2:
            raise LmforgeError(f"a {self.head} head needs at least two labels, got {len(self.labels)}")

    def approx_params(self) -> int:
        """Parameters, to within biases and norms: embeddings (vocab x embedding_size, positions x d) and,
        per layer, attention (d^2 for q and the output, 2 d^2 n_kv_head / n_head for k and v) plus the
        MLP (2 d d_ff, 3 d d_ff with SwiGLU's gate)."""
        d, kv = self.d_model, self.d_model * self.n_kv_head // self.n_head
        mlp = (3 if self.activation in ("swiglu", "geglu") else 2) * d * self.d_ff
        emb = self.vocab_size * self.embedding_size * (1 if self.tie_embeddings else 2) + self.context_length * d
        layers = self.n_layer * (2 * d * d + 2 * d * kv + mlp)
        if self.family == "seq2seq":  # decoder layers add cross-attention: another q, k, v and output
            layers += self.n_decoder_layer * (4 * d * d + 4 * d * kv + mlp)
        return emb + layers

    def generator_width_heads(self) -> tuple[int, int]:
        """ELECTRA's generator: d_model and heads scaled by generator_scale, head size kept."""
        heads = max(1, round(self.n_head * self.generator_scale))
        return heads * self.head_dim, heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], typed: bool = False) -> "ModelConfig":
        """From a recipe's model section (text from YAML or --set is converted to each field's type), or with
        typed=True from a config.json, where a number written as text is refused, not guessed at."""
        if typed and isinstance(d, dict):
            text = next((k for k, v in d.items() if isinstance(v, str) and k in (*cls.LIMITS, *cls.FLOATS, *cls.BOOLS)),
                        None)
            if text is not None:
                raise LmforgeError(f"model.{text}={d[text]!r} is text where a {'switch' if text in cls.BOOLS else 'number'} "
                                   "belongs; write it without quotes")
        return cls(**_checked(cls, d, "model"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()), typed=True)


_ENCODER = dict(causal=False, norm_position="post", norm_eps=1e-12, activation="gelu", dropout=0.1)
_T5 = dict(causal=False, position="t5", norm="rmsnorm", norm_eps=1e-6, activation="relu", bias=False, dropout=0.1,
           attention_scale=1.0, tied_output_scale=True)

# Named shapes. Tiny ones train on a laptop CPU in minutes; gpt2 / gpt2-medium are the OpenAI shapes
# (124M / 355M); llama-* use RoPE, RMSNorm, SwiGLU and grouped-query attention.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt-micro": dict(n_layer=2, n_head=2, d_model=64, context_length=64),
    "gpt-mini": dict(n_layer=4, n_head=4, d_model=128, context_length=64),  # nanoGPT's CPU shape
    "gpt-small": dict(n_layer=6, n_head=6, d_model=384, context_length=256),
    "gpt2": dict(n_layer=12, n_head=12, d_model=768, context_length=1024, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, d_model=1024, context_length=1024, vocab_size=50257),
    "llama-mini": dict(
        n_layer=4, n_head=8, n_kv_head=2, d_model=256, context_length=256, position="rope",
        norm="rmsnorm", norm_eps=1e-6, activation="swiglu", bias=False, tie_embeddings=False,
    ),
    # Encoders (bidirectional, post-norm, exact GELU, LayerNorm eps 1e-12 as in BERT's checkpoints).
    "bert-mini": dict(family="bert", n_layer=4, n_head=4, d_model=256, context_length=128, **_ENCODER),
    "bert-small": dict(family="bert", n_layer=6, n_head=6, d_model=384, context_length=256, **_ENCODER),
    "bert-base": dict(family="bert", n_layer=12, n_head=12, d_model=768, context_length=512, vocab_size=30522,
                      **_ENCODER),
    "electra-mini": dict(family="electra", n_layer=4, n_head=4, d_model=256, context_length=128, **_ENCODER),
    "electra-small": dict(family="electra", n_layer=12, n_head=4, d_model=256, embedding_size=128, d_ff=1024,
                          context_length=512, vocab_size=30522, **_ENCODER),
    # Encoder-decoder (models/seq2seq.py). t5-*: pre-norm RMSNorm, no biases, relative-bucket positions, no
    # 1/sqrt(d) in attention, tied output scaled by d_model ** -0.5 (t5-small is T5's own 60M shape).
    # transformer-base: Vaswani et al.'s base model (post-norm, sinusoidal, embeddings times sqrt(d_model)).
    # bart-mini: BART's choices (post-norm, learned positions, a norm after the embeddings, GELU) made small.
    "t5-mini": dict(family="seq2seq", n_layer=4, n_head=4, d_model=256, d_ff=1024, context_length=256, **_T5),
    "t5-small": dict(family="seq2seq", n_layer=6, n_head=8, d_model=512, d_ff=2048, context_length=512,
                     vocab_size=32128, **_T5),
    "transformer-base": dict(family="seq2seq", n_layer=6, n_head=8, d_model=512, d_ff=2048, context_length=512,
                             position="sinusoidal", norm_position="post", activation="relu", dropout=0.1,
                             embed_scale=True, causal=False),
    "bart-mini": dict(family="seq2seq", n_layer=3, n_head=4, d_model=256, d_ff=1024, context_length=256,
                      position="learned", norm_position="post", activation="gelu", dropout=0.1, embed_norm=True,
                      logits_bias=True, causal=False),
    "llama-1b": dict(  # the TinyLlama-1.1B shape
        n_layer=22, n_head=32, n_kv_head=4, d_model=2048, d_ff=5632, context_length=2048,
        vocab_size=32000, position="rope", norm="rmsnorm", norm_eps=1e-5, activation="swiglu",
        bias=False, tie_embeddings=False,
    ),
}


def model_config_from_preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise LmforgeError(f"unknown model preset {name!r}; use one of {', '.join(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})


TRAINABLE = ("bpe", "wordpiece", "unigram", "char")  # the tokenizer kinds data.tokenizer trains (tokenizer.py)


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    corpus: str = "shakespeare"  # a built-in corpus name, or a file, folder or glob
    column: str | None = None  # text column of a .jsonl / .csv / .tsv corpus
    tokenizer: str = "bpe"  # one of TRAINABLE, or a path to a tokenizer.json
    vocab_size: int = 4096  # for a BPE tokenizer trained here
    val_fraction: float = 0.1  # the last fraction of the text (in characters) is validation
    clean: bool = True  # NFKC, control characters, markup, exact duplicates
    sentinels: int = 0  # a tokenizer trained here reserves <extra_id_0..N-1> (T5 span corruption: e.g. 100)


@dataclass
class TrainConfig:
    """How to optimise. Defaults follow GPT-2 / nanoGPT practice."""

    max_steps: int = 2000
    batch_size: int = 12
    grad_accum: int = 1
    lr: float = 1e-3  # adafactor: the relative step (a tensor moves by about lr times its RMS)
    min_lr: float = 1e-4
    optimizer: str = "adamw"  # adamw | adafactor (T5's: steps relative to each tensor's size; lmforge/train/trainer.py)
    schedule: str = "cosine"  # cosine | linear | constant (each after a linear warmup)
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables
    eval_every: int = 250
    eval_batches: int = 20
    save_every: int = 0  # 0: at every evaluation
    log_every: int = 10
    seed: int = 1337
    dtype: str = "auto"  # auto (bfloat16 autocast where measured faster: runtime.choose_dtype) | float32 | bfloat16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    time_limit_minutes: float = 0.0  # 0: no limit; else stop (and save) when the time is up
    progress: bool = True
    objective: str = "auto"  # auto (the model family's own) | clm | mlm | mlm+nsp | rtd | span | denoise (train/pretrain.py)
    mask_prob: float = 0.15  # mlm / rtd: the fraction of tokens chosen for prediction; span: of tokens corrupted; denoise: masked (BART: 0.3)
    mean_span: float = 3.0  # span: the mean length of a corrupted span (T5: 3); denoise: the Poisson mean
    whole_word_mask: bool = False  # mlm / rtd: choose whole words (Chinese: segmented words), not pieces
    patience: int = 0  # > 0: stop after this many evaluations without a better headline metric
    keep_best: bool = False  # save only when the headline metric improves, so the run keeps its best
    compile: str = "auto"  # auto (on CUDA only) | true | false: torch.compile the training pass (train/parallel.py)

    def validate(self) -> None:
        _one_of(self, "train", "schedule", ("cosine", "linear", "constant"))
        _one_of(self, "train", "optimizer", ("adamw", "adafactor"))
        _one_of(self, "train", "dtype", ("auto", "float32", "bfloat16"))
        _one_of(self, "train", "objective", ("auto", "clm", "mlm", "mlm+nsp", "rtd", "span", "denoise"))
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every"):
            if int(getattr(self, name)) < 1:
                raise LmforgeError("{setting} cannot be used; give 1 or more", f"train.{name}", getattr(self, name))
        if self.lr <= 0:
            raise LmforgeError("{setting} cannot be used; give a positive number, e.g. 5e-5", "train.lr", self.lr)
        for name in ("warmup_steps", "save_every", "patience", "min_lr", "weight_decay", "grad_clip",
                     "time_limit_minutes"):
            if getattr(self, name) < 0:
                raise LmforgeError("{setting} cannot be used; give 0 or more", f"train.{name}", getattr(self, name))
        if not 0.0 < self.mask_prob < 1.0:
            raise LmforgeError("{setting} cannot be used; give a share between 0 and 1, e.g. 0.15", "train.mask_prob",
                               self.mask_prob)
        self.compile = auto_or_bool(self.compile, "train.compile")


def _one_of(cfg, section: str, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise LmforgeError(f"{{setting}} is not supported; use {', '.join(allowed[:-1])} or {allowed[-1]}",
                           f"{section}.{name}", value)


@dataclass
class TaskConfig:
    """A downstream task to fine-tune on (lmforge/tasks/): which, on what rows, split how, scored how.
    Optimisation (batch size, learning rate, patience, seed, device, dtype, compile) stays in train:."""

    kind: str = "classify"  # classify | token | qa | translate | summarize
    base: str | None = None  # the pretrained model: an lmforge run, a Hugging Face directory (translate /
    # summarize: also an encoder-decoder preset such as t5-mini, trained from scratch with a tokenizer of the data)
    data: str | None = None  # labelled rows: .csv, .tsv or .jsonl (translate: also bible; summarize: bbc-news)
    text_column: str = "text"
    text_pair_column: str | None = None  # a second text per row: [CLS] a [SEP] b [SEP]
    label_column: str = "label"
    question_column: str = "question"  # qa
    context_column: str = "context"  # qa
    answer_column: str = "answer"  # qa: the answer text, copied from the context
    doc_stride: int | None = None  # qa: tokens shared by neighbouring windows of a long context (None: a quarter)
    tokens_column: str = "tokens"  # token: a list of words per .jsonl line
    tags_column: str = "tags"  # token: their tags, one per word
    source_column: str | None = None  # translate / summarize: the text to turn into the target
    target_column: str | None = None  # translate / summarize: the reference output
    pair: str | None = None  # translate on a built-in parallel corpus: source-target languages, e.g. en-es
    label_smoothing: float = 0.0  # translate / summarize: eps of the smoothed target (0.1 for translation)
    num_beams: int = 4  # translate / summarize: beam search width when validating, testing and predicting
    length_penalty: float = 1.0  # translate / summarize: beam score / length ** length_penalty
    no_repeat_ngram_size: int = 0  # translate / summarize: never repeat an n-gram of this size in an output
    max_target_length: int | None = None  # translate / summarize: target tokens; None: the decoder's context
    val_rows: int = 200  # translate / summarize: validation rows decoded at each evaluation (decoding is slow)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_length: int | None = None  # tokens per row (translate / summarize: per source); None: the model's context
    truncation: str = "warn"  # warn: cut long rows and say how many | error: refuse them
    class_weights: bool = False  # weigh each class by n / (C n_c) in the loss
    metric: str = "accuracy"  # what picks the kept checkpoint: accuracy | f1_macro | entity_f1 (token); qa: f1;
    # translate: bleu | chrf; summarize: rougeL
    epochs: float = 3.0
    evals_per_epoch: int = 1
    warmup_fraction: float = 0.1  # of the steps; sets train.warmup_steps

    def validate(self) -> None:
        _one_of(self, "task", "kind", ("classify", "token", "qa", "translate", "summarize"))
        _one_of(self, "task", "metric", ("accuracy", "f1_macro", "entity_f1", "bleu", "chrf", "rougeL"))
        generative = self.kind in ("translate", "summarize")
        if generative != (self.metric in ("bleu", "chrf", "rougeL")):
            right = "bleu, chrf or rougeL" if generative else "accuracy, f1_macro or entity_f1"
            raise LmforgeError(f"{{setting}} does not score a {self.kind} task; use {right}", "task.metric", self.metric)
        _one_of(self, "task", "truncation", ("warn", "error"))
        if self.metric == "entity_f1" and self.kind != "token":
            raise LmforgeError("{setting} scores tagged entities, which only token classification has; use it with "
                               "the token task", "task.metric", self.metric)
        share = "a share between 0 and 1, e.g. 0.1"
        for name, ok, need in (
                ("epochs", self.epochs > 0, "a positive number, e.g. 3"),
                ("evals_per_epoch", self.evals_per_epoch >= 1, "1 or more"),
                ("doc_stride", self.doc_stride is None or self.doc_stride >= 0, "the overlap in tokens (0 or more)"),
                ("val_fraction", 0 < self.val_fraction < 1, share),
                ("test_fraction", 0 < self.test_fraction < 1, share),
                ("warmup_fraction", 0 <= self.warmup_fraction <= 1, share),
                ("label_smoothing", 0 <= self.label_smoothing < 1, "a share between 0 and 1, e.g. 0.1"),
                ("num_beams", self.num_beams >= 1, "1 (greedy) or more"),
                ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, "0 (off) or more"),
                ("max_target_length", self.max_target_length is None or self.max_target_length >= 1, "1 or more"),
                ("val_rows", self.val_rows >= 1, "1 or more")):
            if not ok or (isinstance(getattr(self, name), float) and not math.isfinite(getattr(self, name))):
                raise LmforgeError(f"{{setting}} cannot be used; give {need}", f"task.{name}", getattr(self, name))
        if self.val_fraction + self.test_fraction >= 1:
            raise LmforgeError("{setting} and the test share leave no rows to train on; make the validation and test "
                               "shares sum to less than 1, e.g. 0.1 each", "task.val_fraction", self.val_fraction)


# the settings of `lmforge finetune` (its flags, FinetuneConfig's arguments) -> the recipe keys they set
SHORTHANDS = {
    "task": "task.kind", "base": "task.base", "data": "task.data", **{name: f"task.{name}" for name in (
        "text_column", "text_pair_column", "label_column", "question_column", "context_column", "answer_column",
        "doc_stride", "tokens_column", "tags_column", "val_fraction", "test_fraction", "max_length", "truncation",
        "class_weights", "metric", "epochs", "evals_per_epoch", "warmup_fraction", "source_column", "target_column",
        "pair", "label_smoothing", "num_beams", "length_penalty", "no_repeat_ngram_size", "max_target_length",
        "val_rows")},
    **{name: f"train.{name}" for name in (
        "batch_size", "lr", "optimizer", "weight_decay", "patience", "seed", "device", "dtype", "compile", "progress")},
}


@dataclass
class GenerateConfig:
    """How to continue a prompt: the decoding rule, its filters, and when to stop (see generate/)."""

    max_new_tokens: int = 200
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set with probability >= p
    min_p: float | None = None  # keep tokens with probability >= min_p * the top token's
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the text
    no_repeat_ngram_size: int = 0  # > 0: never repeat an n-gram of this size
    stop_ids: tuple[int, ...] = ()  # a row ends after emitting one of these
    num_samples: int = 1  # continuations per prompt (sampling: sharing one prefill; beams: the best n)
    num_beams: int = 1  # > 1: beam search instead of sampling
    length_penalty: float = 1.0  # beam score = sum log p / length ** length_penalty
    early_stopping: bool = True  # beams: stop once num_beams hypotheses have ended
    seed: int | None = None

    def __post_init__(self) -> None:
        self.stop_ids = tuple(int(i) for i in self.stop_ids)
        for name in ("max_new_tokens", "top_k", "no_repeat_ngram_size", "num_samples", "num_beams"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise LmforgeError(f"{{field}} must be a whole number, not {value!r}", name, value)
        for name in ("max_new_tokens", "temperature", "repetition_penalty", "no_repeat_ngram_size", "num_samples",
                     "num_beams", "length_penalty"):
            if getattr(self, name) is None:
                raise LmforgeError("{field} must be given a value, not None", name)
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "length_penalty"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, numbers.Real) and math.isfinite(value)):
                raise LmforgeError(f"{{field}} must be a finite number, not {value!r}", name, value)
        if not isinstance(self.early_stopping, bool):
            raise LmforgeError(f"{{field}} must be True or False, not {self.early_stopping!r}", "early_stopping")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
                                      or not -2**63 <= self.seed < 2**64):
            raise LmforgeError(f"{{field}} must be a whole number that fits in 64 bits, not {self.seed!r}", "seed")
        checks = [
            (self.max_new_tokens >= 0, "max_new_tokens", "must be 0 or more"),
            (self.temperature >= 0, "temperature", "must be 0 (greedy) or more"),
            (self.top_k is None or self.top_k > 0, "top_k", "must be a positive integer"),
            (self.top_p is None or 0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (self.min_p is None or 0 <= self.min_p <= 1, "min_p", "must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty", "must be positive (1 is off)"),
            (self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be 0 (off) or more"),
            (self.num_samples >= 1, "num_samples", "must be 1 or more"),
            (self.num_beams >= 1, "num_beams", "must be 1 or more"),
            (self.num_beams == 1 or self.num_samples <= self.num_beams,
             "num_samples", "cannot exceed the number of beams with beam search; raise the number of beams"),
        ]
        for ok, name, rest in checks:
            if not ok:
                raise LmforgeError("{field} " + rest, name, getattr(self, name))


@dataclass
class Recipe:
    """Everything a run needs; saved as `recipe.yaml` beside every checkpoint. `task` is None for
    pretraining (no task: section is written), a TaskConfig for fine-tuning."""

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "gpt-mini"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig | None = None

    def model_config(self, vocab_size: int) -> ModelConfig:
        spec = dict(self.model)
        preset = spec.pop("preset", None)
        spec["vocab_size"] = vocab_size  # the tokenizer decides; a preset's vocabulary is a default only
        if preset is None:
            return ModelConfig.from_dict(spec)
        return model_config_from_preset(preset, **spec)

    def to_dict(self) -> dict[str, Any]:
        d = {"model": dict(self.model), "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}
        if self.task is not None:
            d["task"] = dataclasses.asdict(self.task)
        return d

    def get(self, key: str) -> Any:
        """The value of a dotted key (`train.lr`), or None where the recipe has no such section or key."""
        section, _, name = key.partition(".")
        part = getattr(self, section, None) if section in SECTIONS else None
        return part.get(name) if isinstance(part, dict) else getattr(part, name, None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        if not isinstance(d or {}, dict):
            raise LmforgeError("a recipe is a mapping with model, data, train (and task) sections, not "
                               f"{type(d).__name__} {str(d)[:40]!r}; fix the file")
        d = dict(d or {})
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise LmforgeError(f"unknown recipe section(s) {', '.join(sorted(unknown))}; a recipe has model, data, "
                               "train and task")
        if not isinstance(d.get("model") or {}, dict):
            raise LmforgeError("recipe section 'model' must be a mapping of key: value")
        model = dict(d.get("model") or {"preset": "gpt-mini"})
        allowed = {f.name for f in fields(ModelConfig)} | {"preset"}
        bad = set(model) - allowed
        if bad:
            raise LmforgeError(
                f"unknown recipe key model.{sorted(bad)[0]}; valid keys are {', '.join(sorted(allowed))}"
            )
        recipe = cls(
            model=model,
            data=DataConfig(**_checked(DataConfig, d.get("data") or {}, "data")),
            train=TrainConfig(**_checked(TrainConfig, d.get("train") or {}, "train")),
            task=TaskConfig(**_checked(TaskConfig, d["task"] or {}, "task")) if "task" in d else None,
        )
        recipe.train.validate()
        if recipe.task is not None:
            recipe.task.validate()
        return recipe

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = ("model", "data", "train", "task")


def _checked(cls: type, d: dict[str, Any], section: str) -> dict[str, Any]:
    """Reject keys the dataclass does not have, and coerce YAML/CLI strings to each field's type."""
    if not isinstance(d, dict):
        raise LmforgeError(f"recipe section {section!r} must be a mapping of key: value")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in d.items():
        if key not in known:
            raise LmforgeError(f"unknown recipe key {section}.{key}; valid keys are {', '.join(sorted(known))}")
        out[key] = _coerce(value, known[key].type, f"{section}.{key}")
    return out


YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def auto_or_bool(value: Any, where: str) -> str | bool:
    """"auto", or a yes/no as a recipe or `--set` gives it (true/false, yes/no, on/off, 1/0)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in YES or text in NO:
        return text in YES
    raise LmforgeError("{setting} is not supported; use auto, true or false", where, value)


def _coerce(value: Any, type_name: Any, where: str) -> Any:
    t = str(type_name)
    if value is None:
        if "None" in t or "Any" in t:
            return None
        raise LmforgeError("{field} needs a value; give one after the = sign or leave the key out", where)
    try:
        if t.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in YES or value.lower() in NO:
                    return value.lower() in YES
                raise ValueError(value)
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if t.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if t.startswith("float"):
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(value)
            return float(value)
        if t.startswith("str"):
            if isinstance(value, bool):
                return "true" if value else "false"  # YAML reads `compile: true` as a bool
            if isinstance(value, (int, float)):
                return str(value)  # YAML reads a folder named 2024 as a number
            if not isinstance(value, str):
                raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        raise LmforgeError(f"{{setting}} is not a valid {t.split(' ')[0]}; give a value of that type", where,
                           value) from None
    return value


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """`["train.lr=3e-4", "model.n_layer=2"]` -> {"train": {"lr": "3e-4"}, "model": {"n_layer": 2}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise LmforgeError(f"--set {item!r} is not of the form section.key=value (e.g. train.lr=3e-4)")
        out.setdefault(section, {})[name] = yaml.safe_load(value) if value.strip() else None
    return out


def merge(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if not isinstance(base, dict) or any(not isinstance(v or {}, dict) for v in base.values()):
        return base  # not a recipe's shape: Recipe.from_dict says what is wrong
    merged = {k: dict(v or {}) for k, v in base.items()}
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    return merged


RECIPE_DIR = Path(__file__).parent / "recipes"


def read_recipe(spec: str) -> tuple[dict[str, Any], Path]:
    """The raw mapping of a shipped recipe by name (`quickstart`) or a YAML file, and its path."""
    path = Path(spec)
    if not path.is_file():
        shipped = RECIPE_DIR / f"{spec}.yaml"
        if not shipped.is_file():
            names = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
            raise LmforgeError(f"recipe {spec!r} is neither a file nor a shipped recipe; use a path or one of {names}")
        path = shipped
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}, path
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LmforgeError(f"recipe {path} is not valid YAML ({str(e).splitlines()[0]}); fix the file") from None


def load_recipe(spec: str, overrides: list[str] | None = None) -> Recipe:
    """A shipped recipe by name (`quickstart`), or a path to a YAML file; then `--set` overrides."""
    raw, path = read_recipe(spec)
    recipe = Recipe.from_dict(merge(raw, parse_set(overrides or [])))
    recipe.data.corpus = _resolve_corpus_path(recipe.data.corpus, path.parent)
    return recipe


# The corpora a recipe may name instead of giving a path (data/corpora.py describes, fetches and loads
# them, keyed by these names): here so that config knows a name from a path without importing data.
BUILTIN_CORPORA = ("shakespeare", "peoples-daily", "chinese-reviews", "bbc-news", "bible")


def _resolve_corpus_path(corpus: str, recipe_dir: Path) -> str:
    """A relative corpus path is taken from the working directory, else from the recipe's folder, and
    kept absolute, so that the run's recipe.yaml finds it from anywhere (eval, --resume). A built-in
    corpus name stays a name."""
    if not isinstance(corpus, str) or corpus in BUILTIN_CORPORA:
        return corpus
    here = Path(corpus).expanduser()
    if here.exists() or any(c in corpus for c in "*?["):
        return str(here.absolute()) if here.exists() else str(Path.cwd() / here)
    beside = recipe_dir / corpus
    return str(beside.absolute()) if "/" in corpus and beside.exists() else corpus
