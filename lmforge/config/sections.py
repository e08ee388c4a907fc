"""The recipe's data:, train: and task: sections, and `GenerateConfig` (how to continue a prompt)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from lmforge.config.fields import auto_or_bool
from lmforge.errors import LmforgeError

AUGMENT_OPS = ("synonym", "insert", "swap", "delete", "backtranslate")  # data/augment.py's operations


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
    anonymize: bool = False  # mask e-mail addresses, phones, IDs, cards, IPs and URLs first (data/anonymize.py)
    near_duplicates: float = 0.0  # > 0: cleaning also drops near-copies, shingle Jaccard >= this (e.g. 0.8)
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
    parallel: str = "ddp"  # under torchrun: ddp (every process holds the model) | fsdp (FSDP2: each holds 1/N of it)
    activation_checkpointing: bool = False  # recompute each layer's activations in the backward pass: less memory
    tensorboard: bool = False  # also write TensorBoard event files into the run directory (pip install 'lmforge[monitor]')
    histograms_every: int = 0  # with tensorboard: weight and gradient histograms every this many steps (0: none)

    def validate(self) -> None:
        _one_of(self, "train", "schedule", ("cosine", "linear", "constant"))
        _one_of(self, "train", "optimizer", ("adamw", "adafactor"))
        _one_of(self, "train", "dtype", ("auto", "float32", "bfloat16"))
        _one_of(self, "train", "parallel", ("ddp", "fsdp"))
        _one_of(self, "train", "objective", ("auto", "clm", "mlm", "mlm+nsp", "rtd", "span", "denoise"))
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every"):
            if int(getattr(self, name)) < 1:
                raise LmforgeError("{setting} cannot be used; give 1 or more", f"train.{name}", getattr(self, name))
        if self.lr <= 0:
            raise LmforgeError("{setting} cannot be used; give a positive number, e.g. 5e-5", "train.lr", self.lr)
        for name in ("warmup_steps", "save_every", "histograms_every", "patience", "min_lr", "weight_decay", "grad_clip",
                     "time_limit_minutes"):
            if getattr(self, name) < 0:
                raise LmforgeError("{setting} cannot be used; give 0 or more", f"train.{name}", getattr(self, name))
        if not 0.0 < self.mask_prob < 1.0:
            raise LmforgeError("{setting} cannot be used; give a share between 0 and 1, e.g. 0.15", "train.mask_prob",
                               self.mask_prob)
        self.compile = auto_or_bool(self.compile, "train.compile")
        if self.histograms_every and not self.tensorboard:
            raise LmforgeError("{setting} draws its histograms in TensorBoard; also set train.tensorboard=true (or "
                               "--tensorboard)", "train.histograms_every", self.histograms_every)


def _one_of(cfg, section: str, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise LmforgeError(f"{{setting}} is not supported; use {', '.join(allowed[:-1])} or {allowed[-1]}",
                           f"{section}.{name}", value)


@dataclass
class TaskConfig:
    """A downstream task to fine-tune on (lmforge/tasks/): which, on what rows, split how, scored how.
    Optimisation (batch size, learning rate, patience, seed, device, dtype, compile) stays in train:."""

    kind: str = "classify"  # classify | token | qa | translate | summarize | chat
    base: str | None = None  # the pretrained model: an lmforge run, a Hugging Face directory (translate /
    # summarize: also an encoder-decoder preset such as t5-mini, trained from scratch with a tokenizer of the data)
    data: str | None = None  # labelled rows: .csv, .tsv or .jsonl (translate: also bible; summarize: bbc-news;
    # chat: conversations as .jsonl, or chitchat)
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
    # chat: always its validation loss;
    # translate: bleu | chrf; summarize: rougeL
    epochs: float = 3.0
    evals_per_epoch: int = 1
    warmup_fraction: float = 0.1  # of the steps; sets train.warmup_steps
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank on a frozen base (models/lora.py); 0: every weight
    lora_alpha: float = 16.0  # the adapters' scale is lora_alpha / lora_rank
    lora_dropout: float = 0.05  # dropout on the adapters' input
    lora_targets: str = "qkv,proj,fc"  # the blocks' Linear layers that get adapters: qkv, proj, fc, q, kv
    augment: str | None = None  # classify: EDA operations for the training rows (data/augment.py), e.g.
    # synonym,insert,swap,delete; backtranslate with augment_via. Validation and test rows are never augmented
    augment_n: int = 4  # variants per training row
    augment_alpha: float = 0.1  # share of a row's words each operation changes
    augment_via: str | None = None  # backtranslate: THERE,BACK, two lmforge translation runs

    def validate(self) -> None:
        _one_of(self, "task", "kind", ("classify", "token", "qa", "translate", "summarize", "chat"))
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
                ("val_rows", self.val_rows >= 1, "1 or more"),
                ("lora_rank", self.lora_rank >= 0, "0 (off) or a rank such as 8"),
                ("lora_alpha", self.lora_alpha > 0, "a positive scale, e.g. 16"),
                ("lora_dropout", 0 <= self.lora_dropout < 1, "a share between 0 and 1, e.g. 0.05"),
                ("augment_n", self.augment_n >= 1, "1 or more variants a row"),
                ("augment_alpha", 0 < self.augment_alpha <= 1, "a share of a row's words between 0 and 1, e.g. 0.1")):
            if not ok or (isinstance(getattr(self, name), float) and not math.isfinite(getattr(self, name))):
                raise LmforgeError(f"{{setting}} cannot be used; give {need}", f"task.{name}", getattr(self, name))
        if self.augment is not None:
            if self.kind != "classify":
                raise LmforgeError(f"{{setting}} makes labelled rows for classification; the {self.kind} task's "
                                   "targets would not follow the changed words: leave it out", "task.augment",
                                   self.augment)
            ops = [o.strip() for o in str(self.augment).split(",") if o.strip()]
            if not ops or any(o not in AUGMENT_OPS for o in ops):
                raise LmforgeError(f"{{setting}} is not known; use some of {','.join(AUGMENT_OPS)}", "task.augment",
                                   self.augment)
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
        "val_rows", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "augment", "augment_n",
        "augment_alpha", "augment_via")},
    **{name: f"train.{name}" for name in (
        "batch_size", "lr", "optimizer", "weight_decay", "patience", "seed", "device", "dtype", "compile", "progress",
        "tensorboard")},
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
