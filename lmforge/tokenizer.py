"""Tokenizers on Hugging Face `tokenizers`: byte-level BPE, WordPiece, Unigram and character level, one set of specials.

Byte-level BPE (GPT-2) starts from the 256 byte values, so any UTF-8 text round-trips exactly, and
repeatedly merges the most frequent adjacent pair into a new symbol until the vocabulary is full.
WordPiece (BERT) splits text into words at whitespace and punctuation, each CJK character being a
word of its own, then cuts each word greedily into the longest pieces in the vocabulary; a piece
that continues a word is written `##piece` ("playing" -> play ##ing). It is lossy: case, accents
and spacing are normalised away. Unigram (Kudo 2018; SentencePiece, as T5, mT5 and Marian use it)
marks each word's start with "▁", treats a text as a sequence of pieces each drawn with its own
probability, and keeps, from a large seed vocabulary of frequent substrings, the pieces whose removal
would lose the most likelihood; a text is cut into its most probable sequence of pieces (Viterbi).
A character tokenizer gives each distinct character of the
training text its own id (nanoGPT's shakespeare-char); characters it never saw become `<|unk|>`.

A tokenizer.json from elsewhere (BERT's [CLS] [SEP] [PAD] [MASK] [UNK], RoBERTa's <s> </s> <pad>
<mask> <unk>) works too: each role id is found under our name first, then under those names.

Sentinels are T5's `<extra_id_0>`, `<extra_id_1>`, ...: special tokens that stand for the spans span
corruption removes (lmforge.data.spans). A trainer reserves them with `sentinels=N` (right after the
other specials); `Tokenizer.sentinel_ids` finds them in any tokenizer.json, a Hugging Face T5 one included.

This module imports no torch: it works on strings and lists of ints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from lmforge.config import TRAINABLE  # noqa: F401  (the kinds train_tokenizer makes; named here too)
from lmforge.errors import LmforgeError
from lmforge.io import atomic_write

# The scripts written without spaces between words, as bodies of a regex character class, for every
# module that splits or recognises such text:
#   HAN       ideographs as BERT's tokenizer counts them (its _is_chinese_char): unified, extension A,
#             compatibility, and the supplementary planes (extensions B on, compatibility supplement);
#   CJK       Han, kana and hangul: each character is a word of its own (word splitting, QA scoring);
#   CJK_WIDE  CJK, CJK punctuation and full-width forms: the text that needs a CJK font to be shown.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
CJK = "\u3040-\u30ff\uac00-\ud7af" + HAN
CJK_WIDE = "\u3000-\u303f\uff00-\uffef" + CJK

# One set of special tokens for every family (GPT uses bos/eos/pad; BERT adds cls/sep/mask).
SPECIAL_TOKENS: dict[str, str] = {
    "pad": "<|pad|>",
    "unk": "<|unk|>",
    "bos": "<|bos|>",
    "eos": "<|endoftext|>",
    "mask": "<|mask|>",
    "sep": "<|sep|>",
    "cls": "<|cls|>",
}


def sentinel_token(i: int) -> str:
    """The i-th sentinel, named as T5 names it."""
    return f"<extra_id_{i}>"


# Where other tokenizer.json files keep each role, tried in order after our own name: BERT's
# bracketed names, then RoBERTa's / Llama's. A BERT vocabulary has no bos/eos.
CONVENTIONAL: dict[str, tuple[str, ...]] = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "bos": ("<s>",),
    "eos": ("</s>",),
    "mask": ("[MASK]", "<mask>"),
    "sep": ("[SEP]", "</s>"),
    "cls": ("[CLS]", "<s>"),
}


class Tokenizer:
    """A thin wrapper: `encode(str) -> list[int]`, `decode(list[int]) -> str`, ids of the specials."""

    def __init__(self, hf: HFTokenizer, kind: str):
        self.hf = hf
        self.kind = kind
        added = {t.content: i for i, t in hf.get_added_tokens_decoder().items()}
        self._added_special = {i for i, t in hf.get_added_tokens_decoder().items() if t.special}
        for role, token in SPECIAL_TOKENS.items():
            setattr(self, f"{role}_id", _role_id(hf, added, token, CONVENTIONAL[role]))
        self.sentinel_ids = _sentinel_ids(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def special_ids(self) -> set[int]:
        """Every role id plus any other token the tokenizer.json marks special."""
        roles = {i for i in (getattr(self, f"{r}_id") for r in SPECIAL_TOKENS) if i is not None}
        return roles | self._added_special

    def encode(self, text: str) -> list[int]:
        try:
            return self.hf.encode(text, add_special_tokens=False).ids
        except TypeError:  # tokenizers refuses a str carrying bytes that were not UTF-8 (lone surrogates)
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise LmforgeError("the text is not valid UTF-8; pass it encoded as UTF-8") from None
            raise

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and each token's character span (start, end) in `text`; no specials added."""
        e = self.hf.encode(text, add_special_tokens=False)
        return e.ids, e.offsets

    def encode_offsets_batch(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """`encode_offsets` over many texts at once (in parallel threads)."""
        return [(e.ids, e.offsets) for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.hf.to_str().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """The tokenizer.json text (what `save` writes)."""
        return self.hf.to_str(pretty=True)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json through the atomic writer: a full disk or an unwritable place is one
        error and leaves nothing behind."""
        atomic_write(path, self.to_json())

    def use_llama_rules(self, legacy: bool = False, add_prefix_space: bool = True) -> None:
        """Split and join text as transformers' Llama tokenizer class does over a BPE tokenizer.json
        (Llama 2, Mistral, TinyLlama): no normalizer; a "▁" pre-tokenizer that marks spaces and
        prepends one to the text, only at its very start (not after a special token) unless
        `legacy`; a decoder that turns "▁" back into spaces, bytes back into characters, and drops
        the space prepended at the start."""
        scheme = ("always" if legacy else "first") if add_prefix_space else "never"
        self.hf.normalizer = None
        self.hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
        steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        self.hf.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if add_prefix_space else []))

    def use_gpt2_rules(self, add_prefix_space: bool = False) -> None:
        """Split and join text as transformers' GPT-2 tokenizer class does over a BPE tokenizer.json:
        no normalizer; the byte-level pre-tokenizer (GPT-2's split into words, numbers and
        punctuation, each byte shown as a printable character), with a space put before the text
        when `add_prefix_space`; the byte-level decoder."""
        self.hf.normalizer = None
        self.hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        self.hf.decoder = decoders.ByteLevel()

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise LmforgeError(f"no tokenizer at {path}; train one with `lmforge tokenizer train` or give its tokenizer.json")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust library raises plain Exception on bad JSON
            raise LmforgeError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0]}); retrain or restore it") from None
        # A tokenizer.json may pad or cut every text to a fixed length (MiniLM's: 128). lmforge encodes
        # whole corpora and prompts and pads batches itself, so both go at load, as transformers drops them.
        hf.no_padding()
        hf.no_truncation()
        return cls(hf, _kind_of(hf))


def _role_id(hf: HFTokenizer, added: dict[str, int], ours: str, others: tuple[str, ...]) -> int | None:
    """Our name wherever it is; else a conventional name, but only one registered as an added token
    (or a bracketed BERT name in the vocabulary): '<s>' may be an ordinary learned piece elsewhere."""
    i = hf.token_to_id(ours)
    if i is not None:
        return i
    for name in others:
        if name in added:
            return added[name]
        if name.startswith("[") and hf.token_to_id(name) is not None:
            return hf.token_to_id(name)
    return None


def _sentinel_ids(hf: HFTokenizer) -> list[int]:
    """Ids of <extra_id_0>, <extra_id_1>, ... in that order, up to the first one missing ([] for none).
    T5's run downwards from the end of its vocabulary; ours follow the other specials: order is by name."""
    ids: list[int] = []
    while (i := hf.token_to_id(sentinel_token(len(ids)))) is not None:
        ids.append(i)
    return ids


def _specials(sentinels: int) -> list[str]:
    """The special tokens a trainer reserves, in id order: ours, then `sentinels` sentinels."""
    if isinstance(sentinels, bool) or not isinstance(sentinels, int) or sentinels < 0:
        raise LmforgeError("{setting} is not a number of sentinel tokens; give 0 or more (T5 uses 100)",
                           "sentinels", sentinels)
    return list(SPECIAL_TOKENS.values()) + [sentinel_token(i) for i in range(sentinels)]


def _count(sentinels: int) -> str:
    """The specials a trainer reserves, in words (for an error about the vocabulary size)."""
    return f"{len(SPECIAL_TOKENS)} special tokens" + (f" and {sentinels} sentinel{'s' * (sentinels > 1)}" if sentinels else "")


def _kind_of(hf: HFTokenizer) -> str:
    model = json.loads(hf.to_str())["model"]["type"]
    return {"BPE": "bpe", "WordLevel": "char", "WordPiece": "wordpiece"}.get(model, model.lower())


def _check_texts(texts: Iterable[str]) -> Iterator[str]:
    seen_any = False
    for t in texts:
        if t:
            seen_any = True
            yield t
    if not seen_any:
        raise LmforgeError("cannot train a tokenizer on empty text; give a corpus that contains text")


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2, sentinels: int = 0) -> Tokenizer:
    """Byte-level BPE with `vocab_size` entries: 256 bytes + the specials (and sentinels) + learned merges."""
    specials = _specials(sentinels)
    floor = 256 + len(specials)
    if vocab_size < floor:
        raise LmforgeError(
            f"vocabulary size {vocab_size} is too small for byte-level BPE, which needs the 256 bytes and "
            f"{_count(sentinels)}; use at least {floor}"
        )
    hf = HFTokenizer(models.BPE(unk_token=None, fuse_unk=False))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(_check_texts(texts), trainer=trainer)
    return Tokenizer(hf, "bpe")


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool = True,
                    min_frequency: int = 2, sentinels: int = 0) -> Tokenizer:
    """BERT's WordPiece: BertNormalizer (CJK characters spaced apart, accents stripped when lowercasing),
    BertPreTokenizer (split at whitespace and punctuation), then the vocabulary: the specials, every
    character seen (alone and as `##c`) and the most useful merges until `vocab_size` entries."""
    specials = _specials(sentinels)
    floor = len(specials) + 1
    if vocab_size < floor:
        raise LmforgeError(f"vocabulary size {vocab_size} is too small for WordPiece, which needs the "
                           f"{_count(sentinels)} and the characters of the text; use at least {floor}")
    hf = HFTokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk"], continuing_subword_prefix="##"))
    hf.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    hf.train_from_iterator(_check_texts(texts), trainer=trainer)
    # The trainer keeps every character it saw even when that overshoots vocab_size: then no merge
    # was learned at all, and the size it reached is the least that holds this text's alphabet.
    if hf.get_vocab_size() > vocab_size:
        raise LmforgeError(
            f"vocabulary size {vocab_size} is too small for WordPiece on this text, whose characters (alone "
            f"and as ##continuations) and special tokens already take {hf.get_vocab_size()}; use more than "
            f"{hf.get_vocab_size()} so that word pieces can be learned too"
        )
    return Tokenizer(hf, "wordpiece")


def train_unigram(texts: Iterable[str], vocab_size: int, sentinels: int = 0) -> Tokenizer:
    """SentencePiece-style Unigram with `vocab_size` entries, laid out as T5's tokenizer.json is: NFKC,
    a Metaspace pre-tokenizer ("▁" before every word), a Unigram model; characters it never saw
    become `<|unk|>`. Pieces are at most 16 characters (Chinese text has no spaces to cut at)."""
    specials = _specials(sentinels)
    floor = len(specials) + 1
    if vocab_size < floor:
        raise LmforgeError(f"vocabulary size {vocab_size} is too small for Unigram, which needs the "
                           f"{_count(sentinels)} and the characters of the text; use at least {floor}")
    hf = HFTokenizer(models.Unigram())
    hf.normalizer = normalizers.NFKC()
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    hf.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=SPECIAL_TOKENS["unk"],
                                      max_piece_length=16, show_progress=False)
    hf.train_from_iterator(_check_texts(texts), trainer=trainer)
    # read back from its JSON, as a saved copy is: the trainer's piece scores do not survive the
    # text form bit for bit, and the fingerprint of what is saved is the one caches and runs compare
    return Tokenizer(HFTokenizer.from_str(hf.to_str()), "unigram")


def train_char(texts: Iterable[str], sentinels: int = 0) -> Tokenizer:
    """One id per distinct character (specials and sentinels first, then characters in code-point order)."""
    specials = _specials(sentinels)
    chars: set[str] = set()
    for t in _check_texts(texts):
        chars.update(t)
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(chars):
        vocab.setdefault(ch, len(vocab))
    hf = HFTokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    hf.decoder = decoders.Fuse()  # join pieces with no separator
    hf.add_special_tokens(specials)
    return Tokenizer(hf, "char")


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 4096, sentinels: int = 0) -> Tokenizer:
    """A tokenizer of `kind` (bpe, wordpiece, unigram, char) with `sentinels` T5 sentinel tokens reserved."""
    if kind == "bpe":
        return train_bpe(texts, vocab_size, sentinels=sentinels)
    if kind == "unigram":
        return train_unigram(texts, vocab_size, sentinels=sentinels)
    if kind == "wordpiece":
        return train_wordpiece(texts, vocab_size, sentinels=sentinels)
    if kind == "char":
        return train_char(texts, sentinels=sentinels)
    raise LmforgeError(f"unknown tokenizer kind {kind!r}; use bpe, wordpiece, unigram, char, or a path to a tokenizer.json")
