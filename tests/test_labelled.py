"""Batching labelled rows: the length-bucketed training sampler and length-sorted evaluation."""

import random

import torch

from lmforge.data.labelled import Examples, ShuffledBatches, by_length
from lmforge.tasks.classify import predict_probs
from lmforge.tasks.token import tag_words


def lengths(n=203, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 120) for _ in range(n)]


def epochs(sampler, n, k):
    """k epochs of batches (each a list of row indices)."""
    out = []
    for _ in range(k):
        seen, batches = 0, []
        while seen < n:
            batches.append(sampler.next_indices())
            seen += len(batches[-1])
        out.append(batches)
    return out


def padding(batches, ls):
    return sum(max(ls[i] for i in b) * len(b) - sum(ls[i] for i in b) for b in batches)


def test_bucketed_epochs_visit_every_row_once_in_batches_of_similar_length():
    ls = lengths()
    bucketed = epochs(ShuffledBatches(len(ls), 8, seed=3, lengths=ls), len(ls), 3)
    plain = epochs(ShuffledBatches(len(ls), 8, seed=3), len(ls), 3)
    for batches in bucketed:
        assert sorted(i for b in batches for i in b) == list(range(len(ls)))
        assert all(len(b) == 8 for b in batches[:-1]) and len(batches[-1]) == len(ls) % 8
        # the batches are served in shuffled order, not longest first
        longest = [max(ls[i] for i in b) for b in batches[:-1]]
        assert longest != sorted(longest, reverse=True) and longest != sorted(longest)
    assert bucketed[0] != bucketed[1]  # a fresh order every epoch
    assert all(padding(b, ls) * 5 < padding(p, ls) for b, p in zip(bucketed, plain))


def test_bucketed_batches_are_seeded_and_resume_where_they_stopped():
    ls = lengths()
    a, b = ShuffledBatches(len(ls), 8, 7, ls), ShuffledBatches(len(ls), 8, 7, ls)
    assert epochs(a, len(ls), 2) == epochs(b, len(ls), 2)
    assert epochs(ShuffledBatches(len(ls), 8, 8, ls), len(ls), 1) != epochs(ShuffledBatches(len(ls), 8, 7, ls), len(ls), 1)
    run = ShuffledBatches(len(ls), 8, 7, ls)
    for _ in range(31):  # into the second epoch
        run.next_indices()
    resumed = ShuffledBatches(len(ls), 8, 999, ls)
    resumed.load_state_dict(run.state_dict())
    assert [resumed.next_indices() for _ in range(60)] == [run.next_indices() for _ in range(60)]


def test_a_state_saved_without_lengths_resumes_with_them():
    """A run saved before bucketing: its epoch goes on in its order, the next one is bucketed."""
    ls = lengths(40)
    old = ShuffledBatches(40, 8, 1)
    old.next_indices()
    new = ShuffledBatches(40, 8, 1, ls)
    new.load_state_dict(old.state_dict())
    assert [new.next_indices() for _ in range(4)] == [old.next_indices() for _ in range(4)]
    assert sorted(i for _ in range(5) for i in new.next_indices()) == list(range(40))


def test_evaluation_batches_by_length_and_returns_rows_in_their_order():
    ls = lengths(50)
    chunks = by_length(ls, 16)
    assert sorted(i for c in chunks for i in c) == list(range(50))
    assert [ls[i] for c in chunks for i in c] == sorted(ls, reverse=True)

    class Scores(torch.nn.Module):
        """Per token, or per row (`per_row`), logits (length of the row, 0): results that name their row."""

        def __init__(self, per_row: bool):
            super().__init__()
            self.per_row, self.w, self.widths = per_row, torch.nn.Parameter(torch.ones(1)), []

        def forward(self, ids, types=None, mask=None):
            self.widths.append(ids.size(1))
            n = mask.sum(1, keepdim=True).float().expand(ids.shape)  # (B, T)
            out = torch.stack([n, torch.zeros_like(n)], -1) * self.w  # (B, T, 2)
            return out[:, 0] if self.per_row else out

    rows = [[7] * n for n in ls]
    ex = Examples(rows, [[0] * n for n in ls], targets=[[i % 2] * n for i, n in enumerate(ls)])  # tags that name the row
    pred, true, _ = tag_words(Scores(per_row=False), ex, pad_id=0, batch_size=16)
    assert true == ex.targets and [len(p) for p in pred] == ls

    ex = Examples(rows, [[0] * n for n in ls], targets=[0] * 50)
    model = Scores(per_row=True)
    probs, _ = predict_probs(model, ex, pad_id=0, batch_size=16)
    assert model.widths == [max(ls[i] for i in c) for c in chunks]  # padded to the longest of similar rows
    # softmax of (n, 0): its first column grows with n, so the row order shows in it
    assert probs[:, 0].tolist() == torch.softmax(torch.tensor([[float(n), 0.0] for n in ls]), -1)[:, 0].tolist()
