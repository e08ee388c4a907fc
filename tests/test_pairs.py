"""Encoder batches: NSP pairs 50/50, adjacency, no document crossing, layout, max_len, seeded and resumable."""

import numpy as np
import pytest
import torch

from lmforge.data.encoder import EncoderSplit
from lmforge.data.pairs import PairBatches, eval_batches, fit_pair
from lmforge.errors import LmforgeError

PAD, CLS, SEP, BASE = 0, 1, 2, 10
SPECIALS = dict(cls_id=CLS, sep_id=SEP, pad_id=PAD)


def make_split(sentences_per_doc, seed=0, max_sentence=20) -> EncoderSplit:
    """Token id = BASE + position in the split, so every token tells where it came from."""
    rng = np.random.default_rng(seed)
    lens, docs = [], []
    for d, n in enumerate(sentences_per_doc):
        lens += rng.integers(1, max_sentence, n).tolist()
        docs += [d] * n
    n_tok = sum(lens)
    return EncoderSplit(tokens=(BASE + np.arange(n_tok)).astype(np.int32),
                        word_ids=(np.arange(n_tok) // 3).astype(np.int32),
                        sent_offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                        sent_doc=np.asarray(docs, dtype=np.int32))


SPLIT = make_split([1, 3, 6, 2, 1, 5, 4, 1, 8, 2, 3, 1] * 5)
TOKEN_DOC = np.repeat(SPLIT.sent_doc, np.diff(SPLIT.sent_offsets))  # (N,) document of each position
SENT_STARTS = set(SPLIT.sent_offsets[:-1].tolist())


def parse(batch, i):
    """Positions of A and B (or of the one segment) in row i, after checking the row's layout."""
    ids, types = batch["input_ids"][i].numpy(), batch["token_type_ids"][i].numpy()
    words, real = batch["word_ids"][i].numpy(), batch["attention_mask"][i].numpy()
    n = int(real.sum())
    assert real[:n].all() and not real[n:].any() and (ids[n:] == PAD).all() and (types[n:] == 0).all()
    assert ids[0] == CLS and ids[n - 1] == SEP
    seps = np.flatnonzero(ids[:n] == SEP)
    ordinary = (ids >= BASE) & real
    assert (words[~ordinary] == -1).all()
    assert (words[ordinary] == SPLIT.word_ids[ids[ordinary] - BASE]).all()
    if "next_sentence_label" not in batch:
        assert len(seps) == 1 and (types == 0).all()
        return ids[1:n - 1] - BASE
    assert len(seps) == 2
    first = seps[0]
    assert (types[:first + 1] == 0).all() and (types[first + 1:n] == 1).all()
    return ids[1:first] - BASE, ids[first + 1:n - 1] - BASE


def contiguous(pos):
    return len(pos) > 0 and (np.diff(pos) == 1).all()


def test_fit_pair_matches_one_token_at_a_time():
    for la in range(0, 12):
        for lb in range(0, 12):
            for budget in range(1, 20):
                a, b = la, lb
                while a + b > budget:
                    if a > b:
                        a -= 1
                    else:
                        b -= 1
                assert fit_pair(la, lb, budget) == (a, b)


@pytest.mark.parametrize("max_len", [8, 32, 64])
def test_nsp_pairs(max_len):
    batches = PairBatches(SPLIT, 64, max_len, nsp=True, seed=0, **SPECIALS)
    labels, single_sentence_a = [], 0
    for _ in range(40):
        batch = batches.next()
        assert batch["input_ids"].shape == (64, max_len) and batch["input_ids"].dtype == torch.int64
        assert batch["attention_mask"].dtype == torch.bool and batch["next_sentence_label"].shape == (64,)
        for i, label in enumerate(batch["next_sentence_label"].tolist()):
            a, b = parse(batch, i)
            assert len(a) + len(b) + 3 <= max_len and len(a) and len(b)
            assert contiguous(a) and contiguous(b)
            da, db = set(TOKEN_DOC[a]), set(TOKEN_DOC[b])
            assert len(da) == 1 and len(db) == 1, "a segment crossed a document boundary"
            if label == 0:
                assert da == db and a[-1] + 1 == b[0], "an is-next B does not follow its A"
            else:
                assert da != db, "a random B came from A's own document"
                single_sentence_a += int(np.diff(SPLIT.doc_offsets)[TOKEN_DOC[a[0]]] == 1)
            labels.append(label)
    assert abs(np.mean(labels) - 0.5) < 0.03  # 2,560 rows: sd ~0.01
    assert single_sentence_a > 0, "one-sentence documents should still serve as A"


def test_long_pairs_are_cut_to_max_len():
    split = make_split([4, 3, 5], seed=1, max_sentence=200)
    batch = PairBatches(split, 32, 24, seed=0, **SPECIALS).next()
    assert int(batch["attention_mask"].sum(1).min()) == 24  # every row full: sentences are long


def test_segments_without_nsp():
    max_len = 40
    batches = PairBatches(SPLIT, 64, max_len, nsp=False, seed=3, **SPECIALS)
    for _ in range(10):
        batch = batches.next()
        assert "next_sentence_label" not in batch
        for i in range(64):
            seg = parse(batch, i)
            assert contiguous(seg) and len(set(TOKEN_DOC[seg])) == 1 and seg[0] in SENT_STARTS
            doc_end = np.flatnonzero(TOKEN_DOC == TOKEN_DOC[seg[0]])[-1] + 1
            assert len(seg) == min(max_len - 2, doc_end - seg[0])  # filled unless the document ends


def test_seeded_and_resumable():
    def take(b, n):
        return [b.next() for _ in range(n)]

    a = PairBatches(SPLIT, 8, 32, seed=7, **SPECIALS)
    b = PairBatches(SPLIT, 8, 32, seed=7, **SPECIALS)
    for x, y in zip(take(a, 3), take(b, 3)):
        assert all(torch.equal(x[k], y[k]) for k in x)
    state = a.state_dict()
    expected = take(a, 2)
    resumed = PairBatches(SPLIT, 8, 32, seed=999, **SPECIALS)
    resumed.load_state_dict(state)
    for x, y in zip(expected, take(resumed, 2)):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(take(PairBatches(SPLIT, 8, 32, seed=8, **SPECIALS), 1)[0]["input_ids"],
                           expected[0]["input_ids"])


def test_eval_batches():
    for nsp in (True, False):
        first = list(eval_batches(SPLIT, 16, 32, nsp=nsp, seed=1, **SPECIALS))
        again = list(eval_batches(SPLIT, 16, 32, nsp=nsp, seed=1, **SPECIALS))
        assert len(first) == len(again) > 1
        assert all(torch.equal(x[k], y[k]) for x, y in zip(first, again) for k in x)
        assert len(list(eval_batches(SPLIT, 16, 32, nsp=nsp, n_batches=2, **SPECIALS))) == 2
    # Without NSP every token is scored exactly once, and no piece crosses a document.
    seen = []
    for batch in first:
        for i in range(len(batch["input_ids"])):
            seg = parse(batch, i)
            assert len(set(TOKEN_DOC[seg])) == 1
            seen += seg.tolist()
    assert sorted(seen) == list(range(len(SPLIT.tokens)))


def test_errors():
    with pytest.raises(LmforgeError, match="two documents"):
        PairBatches(make_split([5]), 4, 32, **SPECIALS)
    with pytest.raises(LmforgeError, match="two or more sentences"):
        PairBatches(make_split([1, 1, 1]), 4, 32, **SPECIALS)
    PairBatches(make_split([1, 1, 1]), 4, 32, nsp=False, **SPECIALS).next()  # fine without NSP
    with pytest.raises(LmforgeError, match="context of 4 tokens"):
        PairBatches(SPLIT, 4, 4, **SPECIALS)
