"""Encoder-decoder decoding over a cache whose rows share their histories (generate/cpu/shared_history.py):
beams re-ranked, grown from one encoding, or leaving, give the logits of the copying cache, and no key
is copied to re-rank them."""

import pytest
import torch

from lmforge.config import GenerateConfig
from lmforge.generate import Engine
from lmforge.generate.cpu import library
from lmforge.generate.cpu.shared_history import compiled_attention
from lmforge.generate.seq2seq import Seq2SeqState
from tests.test_seq2seq import tiny

pytestmark = pytest.mark.skipif(library() is None, reason="the compiled attention needs a C compiler here")

SOURCES = [[5, 9, 11, 3, 8, 2], [7, 4], [12, 13, 14, 15, 16]]
SELECTS = [  # (rows kept, in order: row i continues row rows[i]), then a step
    [0, 0, 0, 1, 1, 1, 2, 2, 2],  # one encoding -> three beams each (the store grows once)
    [2, 0, 0, 3, 5, 4, 8, 8, 6],  # re-ranked within each source
    [6, 7, 8, 0, 1, 2, 3, 4, 5],  # sources reordered: every row reads another source than before
    [0, 1, 2, 6, 6, 7],  # one source done: its rows leave
    [4, 5, 3, 1, 0, 0],
]


def both(model, tokens_seed=3):
    """The copying state and the sharing one, walked through SELECTS with the same tokens."""
    g = torch.Generator().manual_seed(tokens_seed)
    plain, shared = Seq2SeqState(model, SOURCES, 8), Seq2SeqState(model, SOURCES, 8, library())
    yield plain, shared
    for rows in SELECTS:
        rows = torch.tensor(rows)
        stores = [t.data_ptr() for t in shared.cache.k]
        plain.select(rows)
        shared.select(rows)
        if shared.cache.owner.size(0) >= rows.numel() and len(rows) < 9:
            assert [t.data_ptr() for t in shared.cache.k] == stores  # re-ranking moved no key
        tokens = torch.randint(1, 61, (rows.numel(),), generator=g)
        plain.step(tokens)
        shared.step(tokens)
        yield plain, shared


@pytest.mark.parametrize("preset,kw", [("t5-mini", {}), ("bart-mini", {}), ("t5-mini", {"n_kv_head": 2})])
def test_sharing_histories_gives_the_logits_of_copying_them(preset, kw):
    model = tiny(preset, **kw)
    with torch.no_grad():
        for plain, shared in both(model):
            torch.testing.assert_close(shared.logits, plain.logits, atol=1e-5, rtol=1e-5)
            assert torch.equal(shared.history, plain.history)


def test_a_layers_update_gathers_each_rows_history_as_the_copying_cache_holds_it():
    model = tiny("t5-mini")
    with torch.no_grad():
        *_, (plain, shared) = both(model)
        G, D = model.config.n_kv_head, model.config.head_dim
        k, v = torch.randn(6, G, 1, D), torch.randn(6, G, 1, D)
        for layer in range(model.config.n_decoder_layer):
            want, got = plain.cache[layer].update(k, v), shared.cache[layer].update(k, v)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # earlier layers' sums differ in order


@pytest.mark.parametrize("preset", ["t5-mini", "bart-mini"])
def test_native_and_torch_beam_search_and_sampling_agree(preset):
    model = tiny(preset)
    beams = GenerateConfig(max_new_tokens=14, num_beams=3, num_samples=2, stop_ids=(3, 7, 11, 19))
    samples = GenerateConfig(max_new_tokens=10, temperature=1.0, seed=5, num_samples=3)
    native, torch_path = Engine(model), Engine(model, "torch")
    assert native.backend == "native" and "covers" in native.backend_reason
    for gen in (beams, samples):
        assert native.generate(SOURCES, gen) == torch_path.generate(SOURCES, gen)


def test_under_bfloat16_autocast_shared_steps_match_the_full_decode():
    model = tiny("t5-mini")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        state = Seq2SeqState(model, SOURCES[:1] * 2, reserve=4, native=library())
        memory = model.encode(torch.tensor(SOURCES[:1] * 2))
        for tok in ([4, 8], [9, 1], [2, 2]):
            state.select(torch.tensor([1, 0]))
            state.step(torch.tensor(tok))
            full = model.decode(state.history, memory)[:, -1]
            assert torch.allclose(state.logits.float(), full.float(), atol=0.05, rtol=0.02)


def test_cross_attention_weights_are_refused_on_the_compiled_path():
    model = tiny("t5-mini")
    with torch.no_grad():
        state = Seq2SeqState(model, SOURCES, 4, library())
        with pytest.raises(ValueError, match="backend='torch'"):
            model.decode(state.history, None, cross_kv=state.cross, need_weights=True)


def test_the_kernel_refuses_heads_that_do_not_share_keys_evenly():
    store = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="3 query heads over 2 key heads"):
        compiled_attention(library(), torch.zeros(1, 3, 1, 8), store, store, 2, torch.zeros(1, 4, dtype=torch.long),
                           4, None, None, None)
