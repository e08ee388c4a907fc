"""The Python front door: `lm = lmforge.load(RUN)`; `lm.generate("prompt")`; `lm.model`, `lm.tokenizer`."""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path
from typing import Iterator

import torch

from lmforge.chat import ChatTemplate
from lmforge.config import GenerateConfig
from lmforge.errors import LmforgeError
from lmforge.generate import PAD, Engine
from lmforge.generate.backend import BACKENDS
from lmforge.runtime import pick_device
from lmforge.models import hf
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer
from lmforge.checkpoint import load_pretrained


PROMPT_KINDS = "a prompt is text, a list of token ids, or a list of those"


def as_prompts(prompt) -> tuple[list, bool]:
    """`prompt` as a list of prompts (each text or token ids), and whether it was a single prompt.
    Tensors and arrays count as token ids: 1-D one prompt, 2-D one prompt per row."""
    if hasattr(prompt, "tolist") and not isinstance(prompt, str):
        prompt = prompt.tolist()
    if isinstance(prompt, str):
        return [prompt], True
    if isinstance(prompt, (list, tuple)) and prompt:
        if all(_is_id(i) for i in prompt):
            return [list(prompt)], True
        if all(isinstance(p, str) or (isinstance(p, (list, tuple)) and all(_is_id(i) for i in p)) for p in prompt):
            return [p if isinstance(p, str) else list(p) for p in prompt], False
    raise LmforgeError(f"{PROMPT_KINDS}; not {prompt!r:.60}")


def _is_id(i) -> bool:
    return isinstance(i, numbers.Integral) and not isinstance(i, bool)


CONTEXT_TOKENS = 8  # prompt tokens decoded before a continuation (LM.continuation): enough for any decoder's start rule


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is not None and not isinstance(stop, (str, list, tuple)):
        raise LmforgeError(f"stop is text or a list of texts, not {stop!r}")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stops):
        raise LmforgeError("a stop string must be non-empty text; drop the empty one")
    return stops


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop string in it (not included), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


def hold_back(text: str, stops: list[str]) -> str:
    """The part of `text` that is final while more tokens may follow: without a trailing incomplete
    character (shown as U+FFFD by the decoder) and without an ending that could start a stop string."""
    text = text.rstrip("\ufffd")
    partial = [k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])]
    return text[:len(text) - max(partial, default=0)]


class LM:
    """A trained model with its tokenizer, ready to generate text and score it."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, path: Path | None = None, add_bos: bool = False,
                 end_ids: tuple[int, ...] = (), backend: str = "auto"):
        self.model, self.tokenizer, self.path = model, tokenizer, path
        self._backend, self._engine = backend, None  # the decoding engine, made on first use
        self.add_bos = add_bos  # start every prompt with the bos token (Llama checkpoints are trained so)
        ends = ((tokenizer.eos_id,) if tokenizer.eos_id is not None else ()) + tuple(end_ids)
        self.end_ids = tuple(i for i in dict.fromkeys(ends) if 0 <= i < model.config.vocab_size)  # stop at any

    @property
    def config(self):
        return self.model.config

    @property
    def engine(self) -> Engine:
        """The decoding engine (made once per model: its backend is chosen then; see generate/backend.py)."""
        if self._engine is None or self._engine.model is not self.model:
            self._engine = Engine(self.model, self._backend)
        return self._engine

    @property
    def backend(self) -> str:
        """How the one-token decode steps run: "native" (the compiled CPU step) or "torch"."""
        return self.engine.backend

    @property
    def backend_reason(self) -> str:
        return self.engine.backend_reason

    @property
    def seq2seq(self) -> bool:
        """An encoder-decoder model: a prompt is a source, and the output a new text (not a continuation)."""
        return self.config.family == "seq2seq"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompt(self, prompt: str | list[int]) -> list[int]:
        """Token ids for a prompt: text is encoded (with the bos token first where the model wants
        it); a list of token ids is taken as it is, e.g. a rendered chat template."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt) if prompt else []  # refuses text that was not UTF-8
            bos = self.tokenizer.bos_id
            if self.add_bos and bos is not None and ids[:1] != [bos]:
                ids = [bos] + ids
            if any(i >= self.config.vocab_size for i in ids):
                raise LmforgeError(f"the tokenizer gives ids beyond the model's vocabulary of {self.config.vocab_size}; "
                                   "the tokenizer.json does not belong to this model")
        else:
            prompts, one = as_prompts(prompt)
            if not one or isinstance(prompts[0], str):
                raise LmforgeError(f"{PROMPT_KINDS}, one at a time here; not {prompt!r:.60}")
            ids = [int(i) for i in prompts[0]]
            if any(not 0 <= i < self.config.vocab_size for i in ids):
                raise LmforgeError(f"a prompt token id is outside the vocabulary of {self.config.vocab_size}; "
                                   "encode the prompt with this model's tokenizer")
        if self.seq2seq:  # the prompt is a source: it ends with the end token, as in training
            if not ids:
                raise LmforgeError("an encoder-decoder model needs a source text to translate or summarise; give one")
            if isinstance(prompt, str) and self.tokenizer.eos_id is not None:
                ids = ids + [self.tokenizer.eos_id]
        context = self.config.context_length
        if len(ids) > context:
            raise LmforgeError(
                f"the prompt is {len(ids)} tokens, longer than the model's context of {context}; shorten the prompt"
            )
        if ids:
            return ids
        start = self.tokenizer.eos_id if self.tokenizer.eos_id is not None else self.tokenizer.bos_id
        if start is None:
            raise LmforgeError("this model's tokenizer has no end-of-text or start token to begin a text from; "
                               "give a prompt")
        return [start]  # an empty prompt starts a new document

    def generate(self, prompt: str | list[int] | list[str] | list[list[int]] = "", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop_at_eos: bool = True, stop: str | list[str] | None = None, **options) -> str | list:
        """The continuation of `prompt` (the prompt itself is not repeated). temperature 0 is greedy.

        A prompt is text or a list of token ids (used as they are). A list of prompts is decoded as
        one batch and gives a list. `stop`: text at which a
        continuation ends (not included). `options` are the other fields of `GenerateConfig`:
        min_p, repetition_penalty, no_repeat_ngram_size, num_samples (n continuations per prompt,
        sharing one prefill: a list per prompt), num_beams (> 1: beam search), length_penalty,
        early_stopping.
        """
        prompts, one = as_prompts(prompt)  # text, token ids, or a list of either
        gen = self.generate_config(max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos, **options)
        stops = stop_list(stop)
        rows = [self.encode_prompt(p) for p in prompts]
        if stops and gen.num_beams == 1:  # decode as it goes, to end each row at its first stop string
            texts = [""] * len(rows) * gen.num_samples
            for texts in self._texts(rows, gen, stops):
                pass
        else:  # beams: a hypothesis ends at a stop string as at a stop id
            ends = (lambda b, ids: cut_at_stop(self.continuation(rows[b], ids), stops)[1]) if stops else None
            outs = self.engine.generate(rows, gen, ends)
            texts = [cut_at_stop(self.continuation(rows[r // gen.num_samples], t), stops)[0] for r, t in enumerate(outs)]
        n = gen.num_samples
        per_prompt = [texts[i * n:(i + 1) * n] if n > 1 else texts[i] for i in range(len(prompts))]
        return per_prompt[0] if one else per_prompt

    @torch.no_grad()
    def attention(self, text: str, return_tokens: bool = False):
        """The attention weights of every layer for `text`: a list (one per layer) of (heads, T, T)
        tensors, row i holding how query token i spreads its attention over the keys (each row
        sums to 1). Encoders see [CLS] text [SEP]; decoders only look left. Text that does not fit
        in the context is refused, never cut. With `return_tokens`,
        also the tokens as strings, for labelling a plot."""
        tok, cfg = self.tokenizer, self.config
        if cfg.causal or self.seq2seq:  # an encoder-decoder: its encoder's self-attention over the source
            ids = self.encode_prompt(text)
        else:
            ids = tok.encode(text)
            if len(ids) > cfg.context_length - 2:  # refused, as a decoder's prompt is: a cut map would mislead
                raise LmforgeError(f"the text is {len(ids)} tokens, more than the {cfg.context_length - 2} that the "
                                   f"model's context of {cfg.context_length} holds beside [CLS] and [SEP]; shorten the text")
            ids = [tok.cls_id] + ids + [tok.sep_id]
        x = torch.tensor([ids], device=self.device)
        self.model.eval()
        run = self.model.encode if self.seq2seq else self.model
        weights = [w[0].float().cpu() for w in run(x, need_weights=True)[1]]
        if not return_tokens:
            return weights
        return weights, self.token_names(ids)

    @torch.no_grad()
    def cross_attention(self, source: str, target: str, return_tokens: bool = False):
        """An encoder-decoder model's cross-attention while it reads `target` as the translation of
        `source` (teacher forcing): one (heads, T_target, S_source) tensor per decoder layer, row t
        holding how target position t spreads its attention over the source tokens (the alignment
        picture). Target rows are the decoder's inputs: its start token, then the target's tokens."""
        if not self.seq2seq:
            raise LmforgeError(f"this is a {self.config.family} model, which has no cross-attention; give an "
                               "encoder-decoder run")
        tok = self.tokenizer
        src = self.encode_prompt(source)
        tgt = [self.config.decoder_start_id] + tok.encode(target)
        if len(tgt) > self.config.context_length:
            raise LmforgeError(f"the target is {len(tgt)} tokens, more than the decoder's context of "
                               f"{self.config.context_length}; shorten it")
        self.model.eval()
        memory = self.model.encode(torch.tensor([src], device=self.device))
        _, weights = self.model.decode(torch.tensor([tgt], device=self.device), memory, need_weights=True)
        cross = [w[1][0].float().cpu() for w in weights]
        if not return_tokens:
            return cross
        return cross, self.token_names(src), self.token_names(tgt)

    def token_names(self, ids: list[int]) -> list[str]:
        """Each id as the text it stands for (a special token by its name), to label a plot."""
        tok = self.tokenizer
        return [tok.decode([i], skip_special_tokens=False) or tok.hf.id_to_token(i) for i in ids]

    def stream(self, prompt: str | list[int] = "", max_new_tokens: int = 200, temperature: float = 0.8,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop_at_eos: bool = True, stop: str | list[str] | None = None, **options) -> Iterator[str]:
        """The continuation of one prompt as pieces of text, each yielded as soon as it is final: a
        byte-level token can end inside a multi-byte character, and text that may be the start of
        a stop string waits until it is clear that it is not. `prompt` is text, or token ids taken
        as they are.

        With num_samples n > 1 the n samples share one prefill and are decoded together, exactly
        as `generate` decodes them with the same seed; each item is then a list of n pieces (""
        where a sample has nothing new yet)."""
        gen = self.generate_config(max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos, **options)
        if gen.num_beams > 1:
            raise LmforgeError("beam search keeps several candidates until the end, so it cannot stream; drop num_beams")
        if not as_prompts(prompt)[1]:
            raise LmforgeError("stream takes one prompt; stream the prompts one by one, or use generate for a list")
        shown = [""] * gen.num_samples
        for texts in self._texts([self.encode_prompt(prompt)], gen, stop_list(stop), final=False):
            pieces = [t[len(s):] for t, s in zip(texts, shown)]
            if any(pieces):
                yield pieces if gen.num_samples > 1 else pieces[0]
                shown = list(texts)

    def generate_config(self, max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = None,
                        top_p: float | None = None, seed: int | None = None, stop_at_eos: bool = True,
                        **options) -> GenerateConfig:
        if not self.config.causal and not self.seq2seq:
            raise LmforgeError(f"this is a {self.config.family} encoder, and encoders do not generate text; "
                               "use a GPT-family model to generate")
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(GenerateConfig)} - {"stop_ids"})
        if unknown:
            raise LmforgeError(f"unknown generation option {unknown[0]!r}; see help(lmforge.GenerateConfig)")
        extra = options.pop("stop_ids", ())
        extra = [extra] if isinstance(extra, numbers.Integral) else extra  # one id, or several
        if isinstance(extra, (str, bytes)) or not hasattr(extra, "__iter__"):
            raise LmforgeError(f"stop_ids is a token id or a list of them, not {extra!r}")
        stop_ids = (self.end_ids if stop_at_eos else ()) + tuple(extra)
        if any(not isinstance(i, numbers.Integral) or not 0 <= i < self.config.vocab_size for i in stop_ids):
            raise LmforgeError(f"stop_ids must be token ids below the vocabulary size {self.config.vocab_size}")
        return GenerateConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed, stop_ids=stop_ids, **options)

    def continuation(self, prompt: list[int], new: list[int]) -> str:
        """The text `new` adds to `prompt`: decoded after the prompt's last tokens, less their own
        text. Decoded alone, the first new token would be the start of a text, which some decoders
        treat differently (SentencePiece's drops the leading space: "Hello" + "▁world" must read
        "Hello world"); this is also how transformers' pipelines cut the prompt off."""
        if self.seq2seq:  # the decoder's output is a text of its own
            return self.tokenizer.decode(list(new))
        head = list(prompt[-CONTEXT_TOKENS:])
        before, text = self.tokenizer.decode(head), self.tokenizer.decode(head + list(new))
        return text[len(before):] if text.startswith(before) else self.tokenizer.decode(new)

    def _texts(self, rows: list[list[int]], gen: GenerateConfig, stops: list[str],
               final: bool = True) -> Iterator[list[str]]:
        """After each step, the text of every output row so far, cut at a stop string. With
        final=False, a row's text leaves out what could still change (a partial character, or the
        start of a stop string); the last item is always complete. Ends when every row has stopped."""
        tokens: list[list[int]] = []
        texts: list[str] = []
        ended: list[bool] = []
        for step in self.engine.stream(rows, gen):
            if not tokens:
                tokens, texts, ended = [[] for _ in step], [""] * len(step), [False] * len(step)
            for r, t in enumerate(step.tolist()):
                if t == PAD or ended[r]:
                    continue
                tokens[r].append(t)
                texts[r], ended[r] = cut_at_stop(self.continuation(rows[r // gen.num_samples], tokens[r]), stops)
            yield texts if final else [t if e else hold_back(t, stops) for t, e in zip(texts, ended)]
            if all(ended):
                return
        if not final:
            yield texts

    def __repr__(self) -> str:
        c = self.config
        return (f"LM({self.path}, family={c.family}, layers={c.n_layer}, d_model={c.d_model}, "
                f"vocab={c.vocab_size}, params={self.model.num_params():,})")


def load(path: str | Path, device: str = "auto", backend: str = "auto") -> LM:
    """Load a run directory (config.json + model.safetensors + tokenizer.json), or a Hugging Face
    GPT-2 / Llama / BERT / T5 / BART / Marian directory, which needs its tokenizer.json too (see lmforge.models.hf).
    backend: how decoding runs, "auto", "native" or "torch" (lmforge.generate.Engine)."""
    if backend not in BACKENDS:
        raise LmforgeError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    try:  # a Hugging Face directory's JSON files are parsed once, for everything below
        d = hf.HFDir.read(path) if Path(path).is_dir() else None
    except LmforgeError:
        d = None  # not readable as one: load_pretrained says what is wrong with it as a run
    if d is None or not hf.is_hf_dir(d):  # a run; a chat run names its end-of-turn in generation_config.json
        model, tokenizer = load_pretrained(path, pick_device(device))
        return LM(model, tokenizer, Path(path), end_ids=hf.end_ids(d) if d is not None else (), backend=backend)
    model, tokenizer = load_pretrained(d, pick_device(device))
    return LM(model, tokenizer, Path(path), add_bos=_post_processor_adds_bos(tokenizer),
              end_ids=hf.end_ids(d), backend=backend)


def _post_processor_adds_bos(tokenizer: Tokenizer) -> bool:
    """Whether tokenizer.json's post-processor (the special tokens transformers adds) puts bos first,
    as Llama's tokenizers do: then AutoTokenizer starts every text with bos. With a tokenizer.json,
    transformers 5 ignores tokenizer_config.json's add_bos_token, and so does lmforge."""
    bos = tokenizer.bos_id
    return bos is not None and tokenizer.hf.encode("a", add_special_tokens=True).ids[:1] == [bos] \
        and tokenizer.encode("a")[:1] != [bos]


def export_hf(source: LM | str | Path, out: str | Path) -> Path:
    """Write a GPT-2-, Llama-, BERT-, T5-, BART- or Marian-shaped model and its tokenizer as a Hugging Face
    directory at `out`. A quantised run is written with its dequantised weights (float, computing what
    the integers compute)."""
    lm = source if isinstance(source, LM) else load(source, device="cpu")
    model = lm.model
    if getattr(model, "lora", None) is not None:  # a LoRA run exports as its merged weights
        import copy

        from lmforge.models.lora import merge_lora

        model = merge_lora(copy.deepcopy(model))
    if model.config.quantization:  # Hugging Face's GPT-2/Llama/BERT files hold float weights: the dequantised ones
        from lmforge.models.quantized import dequantized_copy

        model = dequantized_copy(model)
    tok = lm.tokenizer
    ids = {role: getattr(tok, f"{role}_id") for role in SPECIAL_TOKENS}
    specials = {role: (tok.hf.id_to_token(i), i) for role, i in ids.items() if i is not None}
    source = lm.path if lm.path is not None and hf.is_hf_dir(lm.path) else None
    own = _own_chat_template(lm.path) if lm.path is not None and lm.path.is_dir() else None  # a chat run's too
    return hf.save_hf(model, out, _tokenizer_json(lm), specials, own or ChatTemplate().jinja(),  # what `chat` renders
                      lm.end_ids, hf.stored_dtype(source) if source else None)  # bf16 in, bf16 out


def _tokenizer_json(lm: LM) -> str:
    """The tokenizer as tokenizer.json; where lmforge starts prompts with bos but the tokenizer's own
    post-processor does not, one that does is appended, so that AutoTokenizer encodes as lmforge does."""
    tok = lm.tokenizer
    if not lm.add_bos or _post_processor_adds_bos(tok):
        return tok.hf.to_str()
    from tokenizers import Tokenizer as HFTokenizer, processors

    copy, bos = HFTokenizer.from_str(tok.hf.to_str()), tok.hf.id_to_token(tok.bos_id)
    template = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                             special_tokens=[(bos, tok.bos_id)])
    copy.post_processor = template if copy.post_processor is None else processors.Sequence([copy.post_processor, template])
    return copy.to_str()


def _own_chat_template(path: Path) -> str | list | None:
    """The chat template a Hugging Face directory carries, as it is: chat_template.jinja, or the
    tokenizer_config.json entry (one template, or a list of named ones)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    own = hf.read_tokenizer_config(path).get("chat_template")
    return own if isinstance(own, (str, list)) and own else None
