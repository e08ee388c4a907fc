"""`ModelConfig`: one dataclass for every model family, checked when built, saved as config.json."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from lmforge.config.fields import typed_fields
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
    head_size: int | None = None  # None: d_model / n_head; else each head's own width (heads pruned, or a
    # Llama checkpoint's head_dim), so that n_head * head_size may differ from d_model
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
    quantization: dict | None = None  # integer weights (models/quantized.py): bits, group_size, symmetric, modules

    # Upper bounds on each size: far above any real model, low enough that a typo or a hostile
    # config.json (10^6 layers, a 2*10^9 vocabulary) is refused before anything is allocated.
    LIMITS: ClassVar[dict[str, int]] = {
        "vocab_size": 2**24, "context_length": 2**20, "n_layer": 4096, "n_head": 2**14, "n_kv_head": 2**14,
        "d_model": 2**16, "d_ff": 2**20, "type_vocab_size": 2**16, "embedding_size": 2**16,
        "n_decoder_layer": 4096, "head_size": 2**16, "relative_buckets": 2**16, "relative_max_distance": 2**20,
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
                           if k not in ("attention_scale", "head_size") or getattr(self, k) is not None})
        if self.head_size is None and self.d_model % self.n_head:
            raise LmforgeError(
                f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}; pick sizes where it is"
            )
        if self.n_head % self.n_kv_head:
            raise LmforgeError(
                f"model.n_head={self.n_head} is not a multiple of model.n_kv_head={self.n_kv_head}; "
                "grouped-query attention shares each key/value head among an equal number of query heads"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise LmforgeError("RoPE needs an even head size (d_model / n_head, or head_size); change d_model, n_head "
                               "or head_size")
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
        if self.quantization is not None:
            self.check_quantization(self.quantization)

    @staticmethod
    def check_quantization(q: Any) -> None:
        """config.json's quantization: {"bits": 8 | 4, "group_size": even int >= 2 or null, "symmetric": bool,
        "method": str, "modules": [layer names]}."""
        fix = "restore config.json from the quantised run, or quantise the original run again"
        if not isinstance(q, dict) or q.get("bits") not in (8, 4) or isinstance(q.get("bits"), bool):
            raise LmforgeError(f"model.quantization={q!r} is not a quantisation lmforge wrote (bits 8 or 4); {fix}")
        group = q.get("group_size")
        if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 2 or group % 2):
            raise LmforgeError(f"model.quantization.group_size={group!r} must be an even whole number of 2 or more; {fix}")
        modules = q.get("modules")
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules) or \
                not isinstance(q.get("symmetric", True), bool):
            raise LmforgeError(f"model.quantization must list its layers in modules and say symmetric true or false; {fix}")

    def approx_params(self) -> int:
        """Parameters, to within biases and norms: embeddings (vocab x embedding_size, positions x d) and,
        per layer, attention (2 d q for q and the output, 2 d kv for k and v, where q = n_head head_dim and
        kv = n_kv_head head_dim: d^2 and 2 d^2 n_kv_head / n_head when the heads fill d) plus the MLP
        (2 d d_ff, 3 d d_ff with SwiGLU's gate)."""
        d, q, kv = self.d_model, self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        mlp = (3 if self.activation in ("swiglu", "geglu") else 2) * d * self.d_ff
        emb = self.vocab_size * self.embedding_size * (1 if self.tie_embeddings else 2) + self.context_length * d
        layers = self.n_layer * (2 * d * q + 2 * d * kv + mlp)
        if self.family == "seq2seq":  # decoder layers add cross-attention: another q, k, v and output
            layers += self.n_decoder_layer * (4 * d * q + 4 * d * kv + mlp)
        return emb + layers

    def generator_width_heads(self) -> tuple[int, int]:
        """ELECTRA's generator: d_model and heads scaled by generator_scale, head size kept."""
        heads = max(1, round(self.n_head * self.generator_scale))
        return heads * self.head_dim, heads

    @property
    def head_dim(self) -> int:
        return self.head_size or self.d_model // self.n_head

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
        return cls(**typed_fields(cls, d, "model"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()), typed=True)
