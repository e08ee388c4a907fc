"""The KV-cache engine: the same tokens as re-reading the whole sequence (every preset family),
batches of prompts of different lengths, n samples sharing one prefill, and beam search."""

import itertools

import pytest
import torch

from lmforge.config import PRESETS, GenerateConfig, model_config_from_preset
from lmforge.generate import PAD, Engine, beam_search, generate
from lmforge.models import build_model


def tiny(preset, vocab=61, scale=None):
    """scale: redraw the matrices with this std, so that the tokens depend on the whole window (a cut one shows)."""
    llama = "llama" in preset
    cfg = model_config_from_preset(preset, vocab_size=vocab, context_length=24, n_layer=2, d_model=32, n_head=4,
                                   n_kv_head=2 if llama else 4, d_ff=64 if llama else None)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if scale is not None and p.dim() >= 2:
                p.normal_(0, scale)
    return model


def greedy(n, **kw):
    return GenerateConfig(max_new_tokens=n, temperature=0, **kw)


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if PRESETS[p].get("family", "gpt") == "gpt"))
def test_cached_equals_uncached_greedy(preset):
    model = tiny(preset)
    ids = torch.randint(0, 61, (3, 5))
    assert Engine(model).generate(ids, greedy(19)) == generate(model, ids, greedy(19))  # fills the context exactly


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if PRESETS[p].get("family", "gpt") == "gpt"))
def test_cached_equals_uncached_past_the_context(preset):
    """Past the context both read the last context_length tokens at every step (a sliding window)."""
    model = tiny(preset, scale=0.3)
    ids = torch.randint(0, 61, (2, 20))
    gen = GenerateConfig(max_new_tokens=40, seed=1, top_k=10)
    for cpu_step in ("native", "torch"):
        assert Engine(model, cpu_step=cpu_step).generate(ids, greedy(40)) == generate(model, ids, greedy(40))
        assert Engine(model, cpu_step=cpu_step).generate(ids, gen) == generate(model, ids, gen)


def test_seeded_sampling_with_every_filter_repeats_and_matches_uncached():
    model = tiny("gpt-mini")
    ids = torch.randint(0, 61, (2, 4))
    gen = GenerateConfig(max_new_tokens=15, top_k=20, top_p=0.9, min_p=0.02, repetition_penalty=1.3,
                         no_repeat_ngram_size=2, seed=3)
    a = Engine(model).generate(ids, gen)
    assert a == Engine(model).generate(ids, gen) == generate(model, ids, gen)
    for row in a:  # no bigram twice
        assert len(set(zip(row, row[1:]))) == len(row) - 1


@pytest.mark.parametrize("preset", ["gpt-mini", "llama-mini"])  # learned positions and RoPE
def test_a_padded_batch_gives_each_prompt_what_it_gets_alone(preset):
    model = tiny(preset, scale=0.3)
    rows = [[5, 9, 2, 7, 1, 3, 8, 10, 20, 30, 40, 50], [4], [11, 12, 13]]
    for n in (10, 60):  # 60: past the context of 24; each row's window slides once its own tokens fill it
        for cpu_step in ("native", "torch"):
            batch = Engine(model, cpu_step=cpu_step).generate(rows, greedy(n))
            assert batch == [Engine(model, cpu_step=cpu_step).generate([r], greedy(n))[0] for r in rows]


def test_samples_share_one_prefill():
    model = tiny("gpt-mini")
    calls = []
    model.register_forward_pre_hook(lambda m, args, kw: calls.append(args[0].shape), with_kwargs=True)
    out = Engine(model).generate([[1, 2, 3], [4, 5]], GenerateConfig(max_new_tokens=6, num_samples=4, seed=0))
    assert calls[0] == (2, 3) and all(c == (8, 1) for c in calls[1:])  # one prefill of the 2 prompts, then 8 rows
    assert len(out) == 8 and len({tuple(r) for r in out[:4]}) > 1  # the samples of a prompt differ
    same = Engine(model).generate([[1, 2, 3]], greedy(6, num_samples=3))
    assert same == [Engine(model).generate([[1, 2, 3]], greedy(6))[0]] * 3


def test_streams_past_the_context_and_stops_at_a_stop_id():
    model = tiny("gpt-small")
    ids = torch.randint(0, 61, (1, 3))
    out = Engine(model).generate(ids, GenerateConfig(max_new_tokens=60, seed=0))  # 63 tokens > context of 24
    assert len(out[0]) == 60
    first = generate(model, ids, greedy(1))[0][0]
    steps = list(Engine(model).stream(ids, greedy(50, stop_ids=(first,))))
    assert len(steps) == 1  # the first greedy token is the stop token
    two = torch.cat([ids, torch.randint(0, 61, (1, 3))])
    rows = list(Engine(model).stream(two, greedy(30, stop_ids=(first,))))
    ended = [i for i, s in enumerate(rows) if s[0] == PAD]
    assert ended and all(s[0] == PAD for s in rows[ended[0]:])  # a finished row yields PAD from then on


def test_checking_for_the_end_every_few_steps_gives_the_same_tokens():
    model = tiny("gpt-small")
    ids = torch.randint(0, 61, (3, 4))
    stop = generate(model, ids[:1], greedy(1))[0][0]
    for gen in (greedy(40, stop_ids=(stop,)), GenerateConfig(max_new_tokens=40, seed=3, stop_ids=(stop, 7))):
        ref = Engine(model).generate(ids, gen)
        assert Engine(model, sync_every=8).generate(ids, gen) == ref
    steps = list(Engine(model, sync_every=8).stream(ids[:1], greedy(50, stop_ids=(stop,))))
    assert len(steps) == 8 and all(int(s[0]) == PAD for s in steps[1:])  # stopped at once, noticed at step 8
    with pytest.raises(ValueError, match="sync_every"):
        Engine(model, sync_every=0)


def test_prompt_longer_than_the_context():
    with pytest.raises(ValueError, match="longer than the context"):
        next(Engine(tiny("gpt-mini")).stream(torch.zeros(1, 25, dtype=torch.long)))


def sequence_logprob(model, prompt, tokens):
    ids = torch.tensor([prompt + tokens])
    logp = torch.log_softmax(model(ids)[0].float(), -1)
    return sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(tokens))


def test_beam_search_with_enough_beams_finds_the_best_sequence():
    model = tiny("gpt-mini", vocab=5)
    prompt = [1, 2]
    with torch.no_grad():
        best = max(itertools.product(range(5), repeat=3), key=lambda s: sequence_logprob(model, prompt, list(s)))
    found = beam_search(model, [prompt], GenerateConfig(max_new_tokens=3, num_beams=25))  # 25 = 5^2: exhaustive
    assert found == [list(best)]
    one = beam_search(model, [prompt], GenerateConfig(max_new_tokens=8, num_beams=1))
    assert one == Engine(model).generate([prompt], greedy(8))  # one beam is greedy


def test_beams_rank_finished_hypotheses_by_length_penalised_score():
    model = tiny("gpt-mini", vocab=7)
    prompt = [3, 1, 4]
    gen = GenerateConfig(max_new_tokens=6, num_beams=4, num_samples=4, stop_ids=(2, 5), early_stopping=False)
    hyps = Engine(model).generate([prompt], gen)
    assert len(hyps) == 4 and len({tuple(h) for h in hyps}) == 4
    with torch.no_grad():
        scores = [sequence_logprob(model, prompt, h) / len(h) for h in hyps]
    assert scores == sorted(scores, reverse=True)  # best first, by log p / length ** 1
    assert all(h[-1] in (2, 5) or len(h) == 6 for h in hyps)  # stopped at a stop id, or ran out of steps
    assert all(t not in (2, 5) for h in hyps for t in h[:-1])


def test_padded_beam_batch_matches_each_prompt_alone():
    model = tiny("llama-mini")
    rows = [[7, 8, 9, 10, 11], [3]]
    gen = GenerateConfig(max_new_tokens=8, num_beams=3, num_samples=2, stop_ids=(0,))
    assert Engine(model).generate(rows, gen) == [h for r in rows for h in Engine(model).generate([r], gen)]


def test_beam_batches_shrink_as_prompts_finish_and_match_each_prompt_alone():
    model = tiny("gpt-mini", vocab=13)
    rows = [[7, 8, 9, 10, 11], [3], [4, 4], [12, 1, 6]]
    gen = GenerateConfig(max_new_tokens=10, num_beams=3, stop_ids=(0, 2, 5))
    native, torch_path = Engine(model, cpu_step="native"), Engine(model, cpu_step="torch")
    together = native.generate(rows, gen)
    assert together == [h for r in rows for h in native.generate([r], gen)]
    rows_seen = []  # the torch path's steps (the native step refuses a hooked model)
    model.blocks[0].register_forward_pre_hook(lambda m, args: rows_seen.append(args[0].size(0)))
    assert torch_path.generate(rows, gen) == together
    assert rows_seen[1] == 12 and min(rows_seen) < 12, rows_seen  # 4 prompts x 3 beams after the prefill
    assert rows_seen[1:] == sorted(rows_seen[1:], reverse=True)


def test_beam_search_cannot_stream():
    with pytest.raises(ValueError, match="cannot stream"):
        next(Engine(tiny("gpt-mini")).stream([[1]], GenerateConfig(num_beams=2)))


@pytest.mark.parametrize("cpu_step", ["native", "torch"])
def test_a_finished_generation_frees_its_cache_without_the_garbage_collector(monkeypatch, cpu_step):
    """A reference cycle through the cache kept every call's keys and values (tens of MB) alive until
    Python's cycle collector happened to run: a server's memory grew with each request."""
    import gc
    import weakref

    from lmforge.generate import kv_cache

    made, real = [], kv_cache.KVCache.__init__

    def tracked(self, *a, **kw):
        real(self, *a, **kw)
        made.append(weakref.ref(self))

    monkeypatch.setattr(kv_cache.KVCache, "__init__", tracked)
    model, ids = tiny("gpt-micro"), torch.randint(0, 61, (2, 5))
    engine = Engine(model, cpu_step=cpu_step)
    gc.disable()
    try:
        for gen in (greedy(8), GenerateConfig(max_new_tokens=8, num_samples=2, seed=1), greedy(8, num_beams=2)):
            engine.generate(ids, gen)
            list(engine.stream(ids, greedy(4)))
    finally:
        gc.enable()
    assert made and all(ref() is None for ref in made)


def test_a_model_with_a_context_of_one_token_still_decodes():
    cfg = model_config_from_preset("gpt-mini", vocab_size=61, context_length=1, n_layer=1, d_model=16, n_head=2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for gen in (greedy(4), greedy(4, num_beams=2), GenerateConfig(max_new_tokens=4, num_samples=2, seed=0)):
        out = Engine(model).generate([[5]], gen)
        assert len(out) == gen.num_samples and all(len(row) == 4 for row in out)
    assert Engine(model).generate([[5]], greedy(4)) == generate(model, torch.tensor([[5]]), greedy(4))


def test_any_finite_length_penalty_ranks_without_overflow():
    from lmforge.generate.beam import Hypotheses

    assert Hypotheses(2, 0.5).normalised(-2.0, 4) == pytest.approx(-1.0)  # -2 / 4 ** 0.5
    assert Hypotheses(2, 400.0).normalised(-2.0, 4) > Hypotheses(2, 400.0).normalised(-2.0, 3)  # -2/4^400 ~ 0-
    assert Hypotheses(2, -400.0).normalised(-2.0, 4) < 0  # -2 * 4^400: huge but finite
    model = tiny("gpt-mini")
    for penalty in (400.0, -400.0):
        out = beam_search(model, [[1, 2]], greedy(6, num_beams=3, length_penalty=penalty, stop_ids=(5,),
                                                      early_stopping=False))
        assert len(out) == 1 and out[0]


def test_cache_select_copies_moved_rows_only_and_equals_a_gather():
    from lmforge.generate.kv_cache import KVCache

    cache = KVCache(2, 4, 2, 6, 3)
    for layer in cache.layers:
        layer.k.copy_(torch.randn_like(layer.k))
        layer.v.copy_(torch.randn_like(layer.v))
    cache.advance(4)
    before = [(layer.k.clone(), layer.v.clone()) for layer in cache.layers]
    rows = torch.tensor([0, 0, 3, 1])  # row 0 keeps itself; 1 <- 0, 2 <- 3, 3 <- 1 (read before written)
    cache.select(rows)
    for layer, (k, v) in zip(cache.layers, before):
        assert torch.equal(layer.k[:, :, :4], k[rows, :, :4]) and torch.equal(layer.v[:, :, :4], v[rows, :, :4])
        assert torch.equal(layer.k[:, :, 4:], k[:, :, 4:])  # slots past the position are left alone
    cache.select(torch.tensor([2, 2]))  # a new batch size: new storage
    assert cache.layers[0].k.shape[0] == 2
