"""MLM masking: 15% chosen in expectation, 80/10/10, specials never, whole words all-or-nothing, seeded."""

import pytest
import torch

from lmforge.data.masking import IGNORE, mask_tokens
from lmforge.errors import LmforgeError

V, PAD, CLS, SEP, MASK = 1000, 0, 1, 2, 3
SPECIALS = {PAD, CLS, SEP, MASK, 4}


def batch(seed=0, B=64, T=128):
    """Rows [CLS] tokens... [SEP] [PAD]..., ordinary ids 5..V-1, with word ids of 1-4 tokens each."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    lengths = torch.randint(T // 2, T, (B,), generator=g)
    word_ids = torch.full((B, T), -1)
    for b, n in enumerate(lengths.tolist()):
        ids[b, 0], ids[b, n - 1], ids[b, n:] = CLS, SEP, PAD
        starts = torch.rand(n - 2, generator=g) < 0.4
        starts[0] = True
        word_ids[b, 1:n - 1] = torch.cumsum(starts.long(), 0) * 7  # any ids will do, equal = one word
    return ids, word_ids


def draws(n, **kw):
    g = torch.Generator().manual_seed(123)
    out = []
    for i in range(n):
        ids, word_ids = batch(i)
        inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, generator=g,
                                     word_ids=word_ids if kw.get("wwm") else None)
        out.append((ids, word_ids, inputs, labels))
    return out


@pytest.mark.parametrize("wwm", [False, True])
def test_rate_and_80_10_10(wwm):
    chosen = ordinary = masked = replaced = kept = 0
    for ids, _, inputs, labels in draws(12, wwm=wwm):
        special = torch.isin(ids, torch.tensor(sorted(SPECIALS)))
        sel = labels != IGNORE
        assert not (sel & special).any(), "a special token was chosen"
        assert torch.equal(inputs[special], ids[special])
        assert torch.equal(labels[sel], ids[sel])
        chosen += int(sel.sum())
        ordinary += int((~special).sum())
        masked += int((inputs[sel] == MASK).sum())
        replaced += int(((inputs[sel] != MASK) & (inputs[sel] != ids[sel])).sum())
        kept += int((inputs[sel] == ids[sel]).sum())
        assert not torch.isin(inputs[sel & (inputs != MASK)], torch.tensor(sorted(SPECIALS))).any()
        assert torch.equal(inputs[~sel], ids[~sel])
    # ~73k ordinary tokens (~29k words): the sd of the rate is ~0.0013 by token, ~0.0023 by word.
    assert abs(chosen / ordinary - 0.15) < 0.008
    assert abs(masked / chosen - 0.8) < 0.015
    # A random replacement equals the original 1 time in ~995: counted as kept.
    assert abs(replaced / chosen - 0.1) < 0.012
    assert abs(kept / chosen - 0.1) < 0.012


def test_whole_words_all_or_nothing():
    some_partial_rows = 0
    for ids, word_ids, inputs, labels in draws(4, wwm=True):
        sel = labels != IGNORE
        assert not sel[word_ids < 0].any()
        for b in range(ids.shape[0]):
            for w in word_ids[b].unique().tolist():
                if w < 0:
                    continue
                picked = sel[b][word_ids[b] == w]
                assert picked.all() or not picked.any(), (b, w)
            # Within a chosen word each token draws its own 80/10/10: some words are partly [MASK].
            for w in word_ids[b][sel[b]].unique().tolist():
                at = word_ids[b] == w
                if at.sum() > 1 and 0 < (inputs[b][at] == MASK).sum() < at.sum():
                    some_partial_rows += 1
    assert some_partial_rows > 0


def test_seeded_and_no_generator():
    ids, word_ids = batch(0)
    kw = dict(mask_id=MASK, vocab_size=V, special_ids=SPECIALS, word_ids=word_ids)
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(5), **kw)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(5), **kw)
    c = mask_tokens(ids, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=V, special_ids=SPECIALS)
    assert inputs.shape == labels.shape == ids.shape and inputs.dtype == torch.int64
    assert torch.equal(ids, batch(0)[0]), "the input tensor was modified in place"


def test_excluded_random_ids_and_edge_cases():
    ids = torch.randint(5, 12, (256, 64), generator=torch.Generator().manual_seed(0))
    allowed = set(range(5, 12)) - {7}
    inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=12, special_ids=SPECIALS, mask_prob=0.5,
                                 random_ids_exclude=[7], generator=torch.Generator().manual_seed(1))
    swapped = (labels != IGNORE) & (inputs != MASK) & (inputs != ids)
    assert swapped.sum() > 100 and set(inputs[swapped].tolist()) <= allowed
    none = mask_tokens(ids, mask_id=MASK, vocab_size=12, special_ids=SPECIALS, mask_prob=0.0)[1]
    assert (none == IGNORE).all()
    with pytest.raises(LmforgeError, match="mask_prob"):
        mask_tokens(ids, mask_id=MASK, vocab_size=12, special_ids=SPECIALS, mask_prob=1.5)
    with pytest.raises(LmforgeError, match="word_ids has shape"):
        mask_tokens(ids, mask_id=MASK, vocab_size=12, special_ids=SPECIALS, word_ids=ids[:, :3])
