"""Span corruption (T5), BART denoising, and sentinel tokens in lmforge's tokenizers."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from lmforge.data.spans import bart_denoise, infill, noise_mask, permute_sentences, span_corrupt
from lmforge.errors import LmforgeError
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe, train_char, train_tokenizer, train_wordpiece

SENTINELS = list(range(1000, 900, -1))  # T5's order: <extra_id_0> is the highest id
MASK = -1


def spans_of(mask: np.ndarray) -> int:
    return int(np.sum(mask & ~np.concatenate(([False], mask[:-1])))) if len(mask) else 0


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int]) -> list[int]:
    """Put each sentinel's tokens from the target back in its place in the input."""
    where = {s: i for i, s in enumerate(sentinels)}
    filled: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if t in where:
            current = where[t]
            filled[current] = []
        else:
            filled[current].append(t)
    out = []
    for t in inputs:
        out += filled[where[t]] if t in where else [t]
    return out


# ---------------------------------------------------------------- T5


@pytest.mark.parametrize("length, noise, spans", [
    (2, 1, 1), (3, 1, 1), (5, 1, 1), (10, 2, 1), (20, 3, 1), (40, 6, 2), (100, 15, 5), (512, 77, 26), (1000, 150, 50)])
def test_noise_and_span_counts_are_exact(length, noise, spans):
    """N = round(0.15 L) clipped to [1, L-1]; S = round(N / 3) clipped to [1, min(N, L-N)]: for every seed."""
    for seed in range(20):
        mask = noise_mask(length, np.random.default_rng(seed))
        assert mask.sum() == noise and spans_of(mask) == spans
        assert not mask[0] and mask[-1]  # kept tokens first, noise last, as T5 lays them out


def test_counts_at_other_densities():
    rng = np.random.default_rng(0)
    mask = noise_mask(10, rng, noise_density=0.9, mean_span=1.0)  # S would be 9 but only 1 token is kept
    assert mask.sum() == 9 and spans_of(mask) == 1
    mask = noise_mask(30, rng, noise_density=0.5, mean_span=1.0)
    assert mask.sum() == 15 and spans_of(mask) == 15  # every other token
    with pytest.raises(LmforgeError, match="noise_density=0"):
        noise_mask(10, rng, noise_density=0.0)
    with pytest.raises(LmforgeError, match="mean_span=0.5"):
        noise_mask(10, rng, mean_span=0.5)


def test_span_lengths_vary_and_average_the_mean():
    lengths = []
    for seed in range(200):
        mask = noise_mask(200, np.random.default_rng(seed))
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(int), [0])))))[::2]
        lengths += runs.tolist()
    assert sum(lengths) / len(lengths) == pytest.approx(30 / 10)  # N / S exactly
    assert min(lengths) == 1 and max(lengths) > 6


@pytest.mark.parametrize("length", [0, 1, 2, 3, 7, 50, 300])
def test_input_and_target_rebuild_the_row(length):
    ids = list(range(10, 10 + length))
    for seed in range(10):
        inputs, targets = span_corrupt(ids, SENTINELS, np.random.default_rng(seed))
        assert reconstruct(inputs, targets, SENTINELS) == ids
        k = sum(t in SENTINELS for t in inputs)
        assert targets[-1] == SENTINELS[k]  # the closing sentinel
        assert [t for t in targets if t in SENTINELS] == SENTINELS[:k + 1]
        assert len(inputs) + len(targets) == length + 2 * k + 1


def test_t5_layout_with_eos():
    ids = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    inputs, targets = span_corrupt(ids, SENTINELS, np.random.default_rng(0), eos_id=1)
    assert inputs == [5, 6, 7, 8, 9, 10, 11, 12, 1000, 1] and targets == [1000, 13, 14, 999, 1]


def test_short_rows():
    for length in (2, 3):
        inputs, targets = span_corrupt(list(range(length)), SENTINELS, np.random.default_rng(3))
        assert sum(t in SENTINELS for t in inputs) == 1 and len(inputs) == length  # one kept, one span
    assert span_corrupt([7], SENTINELS, np.random.default_rng(0), eos_id=1) == ([7, 1], [1000, 1])
    assert span_corrupt([], SENTINELS, np.random.default_rng(0)) == ([], [1000])


def test_deterministic_for_a_seed():
    ids = list(range(200))
    a = span_corrupt(ids, SENTINELS, np.random.default_rng(42))
    assert a == span_corrupt(ids, SENTINELS, np.random.default_rng(42))
    assert a != span_corrupt(ids, SENTINELS, np.random.default_rng(43))


def test_errors_are_one_sentence_with_the_fix():
    with pytest.raises(LmforgeError, match="no sentinel tokens.*sentinels=100") as e:
        span_corrupt([1, 2, 3], [], np.random.default_rng(0))
    assert "\n" not in str(e.value)
    with pytest.raises(LmforgeError, match="26 spans, which need 27 sentinel tokens, but the tokenizer has 5"):
        span_corrupt(list(range(512)), SENTINELS[:5], np.random.default_rng(0))
    with pytest.raises(LmforgeError, match="already holds a sentinel"):
        span_corrupt([1, 999, 3, 4], SENTINELS, np.random.default_rng(0))


# ---------------------------------------------------------------- BART


def test_infill_masks_exactly_the_budget():
    ids = list(range(100, 200))
    for seed in range(30):
        out = infill(ids, MASK, np.random.default_rng(seed))
        kept = [t for t in out if t != MASK]
        assert len(kept) == 70  # round(100 * 0.3) = 30 tokens masked
        assert kept == sorted(kept)  # the kept tokens stay in order
        assert MASK in out


def test_zero_length_spans_insert_a_mask():
    """With Poisson(0.5) most spans are empty: more masks than masked tokens is only possible so."""
    out = infill(list(range(100)), MASK, np.random.default_rng(0), poisson_lambda=0.5)
    assert len([t for t in out if t != MASK]) == 70 and out.count(MASK) > 30


def test_infill_short_rows_and_bad_settings():
    rng = np.random.default_rng(0)
    assert infill([], MASK, rng) == [] and infill([5], MASK, rng) == [5]  # round(0.3) = 0 masked
    assert [t for t in infill([5, 6], MASK, rng) if t != MASK] in ([5], [6])
    with pytest.raises(LmforgeError, match="poisson_lambda=0"):
        infill([1, 2, 3], MASK, rng, poisson_lambda=0)
    with pytest.raises(LmforgeError, match="mask_ratio=1.5"):
        infill([1, 2, 3], MASK, rng, mask_ratio=1.5)


def test_sentence_permutation_keeps_each_sentence_whole():
    dot = 0
    ids = [1, 2, dot, 3, dot, 4, 5, 6, dot, 7, 8]  # the last sentence has no full stop
    seen = set()
    for seed in range(20):
        out = permute_sentences(ids, [dot], np.random.default_rng(seed))
        sentences = sorted(tuple(s) for s in " ".join(map(str, out)).replace(" 0", " 0|").split("|"))
        assert sorted(out) == sorted(ids) and len(sentences) == 4
        seen.add(tuple(out))
    assert len(seen) > 5


def test_bart_denoise_target_is_the_original():
    ids = [1, 2, 0, 3, 4, 0, 5, 6, 7, 0]
    inputs, targets = bart_denoise(ids, MASK, np.random.default_rng(1), sentence_ends=[0], eos_id=9)
    assert targets == ids + [9] and inputs[-1] == 9 and MASK in inputs
    assert bart_denoise(ids, MASK, np.random.default_rng(5)) == bart_denoise(ids, MASK, np.random.default_rng(5))
    with pytest.raises(LmforgeError, match="no mask token"):
        bart_denoise(ids, None, np.random.default_rng(0))


# ---------------------------------------------------------------- sentinels in tokenizers

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "人民日报"] * 10


def test_trainers_reserve_sentinels_after_the_specials():
    n = len(SPECIAL_TOKENS)
    for tok in (train_bpe(TEXTS, 300, sentinels=5), train_wordpiece(TEXTS, 120, sentinels=5),
                train_char(TEXTS, sentinels=5), train_tokenizer("bpe", TEXTS, 300, sentinels=5)):
        assert tok.sentinel_ids == list(range(n, n + 5))
        assert tok.encode("<extra_id_3>") == [n + 3]
        assert set(tok.sentinel_ids) <= tok.special_ids
        assert tok.decode(tok.encode("the cat") + [n + 1]).strip() == "the cat"


def test_no_sentinels_by_default_and_bad_counts(tmp_path):
    for tok in (train_bpe(TEXTS, 300), train_char(TEXTS), train_wordpiece(TEXTS, 120)):
        assert tok.sentinel_ids == [] and tok.vocab_size <= 300
    with pytest.raises(LmforgeError, match="sentinels=-1"):
        train_char(TEXTS, sentinels=-1)
    with pytest.raises(LmforgeError, match="7 special tokens and 1 sentinel; use at least 264"):
        train_bpe(TEXTS, 263, sentinels=1)
    tok = train_bpe(TEXTS, 300, sentinels=3)
    tok.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path).sentinel_ids == tok.sentinel_ids


def test_sentinels_of_a_t5_shaped_tokenizer_json(tmp_path):
    """T5 keeps <extra_id_0> at the top of its vocabulary and counts down."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁the", -1.0), ("▁cat", -2.0), ("▁", -3.0)]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    hf = HFTokenizer(models.Unigram(pieces, unk_id=2))
    hf.add_special_tokens(["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(100)])
    (tmp_path / "tokenizer.json").write_text(hf.to_str())
    tok = Tokenizer.load(tmp_path)
    assert tok.sentinel_ids == list(range(105, 5, -1))
    assert json.loads(hf.to_str())["model"]["type"] == "Unigram"
    ids = tok.encode("▁the▁cat")
    inputs, targets = span_corrupt(ids * 4, tok.sentinel_ids, np.random.default_rng(0), eos_id=tok.eos_id)
    assert targets[0] == 105 and inputs[-1] == targets[-1] == 1


def test_span_corruption_with_a_trained_tokenizer():
    tok = train_bpe(TEXTS, 400, sentinels=100)
    ids = tok.encode(" ".join(TEXTS[:3]))
    inputs, targets = span_corrupt(ids, tok.sentinel_ids, np.random.default_rng(0), eos_id=tok.eos_id)
    assert "<extra_id_0>" in tok.decode(inputs, skip_special_tokens=False)
    assert reconstruct(inputs[:-1], targets[:-1], tok.sentinel_ids) == ids
