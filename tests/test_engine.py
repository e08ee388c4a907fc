"""The KV-cache engine gives the same tokens as re-reading the whole sequence, for every preset family."""

import pytest
import torch

from lmforge.config import PRESETS, model_config_from_preset
from lmforge.generate import Engine, generate
from lmforge.models import build_model


def tiny(preset):
    llama = "llama" in preset
    cfg = model_config_from_preset(preset, vocab_size=61, context_length=24, n_layer=2, d_model=32, n_head=4,
                                   n_kv_head=2 if llama else 4, d_ff=64 if llama else None)
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_cached_equals_uncached_greedy(preset):
    model = tiny(preset)
    ids = torch.randint(0, 61, (3, 5))
    cached = Engine(model).generate(ids, 19, temperature=0)  # fills the context of 24 exactly
    plain = generate(model, ids, 19, temperature=0)
    assert torch.equal(cached, plain)


def test_seeded_sampling_repeats_and_matches_uncached():
    model = tiny("gpt-mini")
    ids = torch.randint(0, 61, (2, 4))
    a = Engine(model).generate(ids, 15, temperature=1.0, top_k=20, seed=3)
    assert torch.equal(a, Engine(model).generate(ids, 15, temperature=1.0, top_k=20, seed=3))
    assert torch.equal(a, generate(model, ids, 15, temperature=1.0, top_k=20, seed=3))


def test_streams_past_the_context_and_stops_at_eos():
    model = tiny("gpt-small")
    ids = torch.randint(0, 61, (1, 3))
    out = Engine(model).generate(ids, 60, temperature=1.0, seed=0)  # 63 tokens > context of 24
    assert out.shape == (1, 63)
    steps = list(Engine(model).stream(ids, 50, temperature=0, eos_id=int(generate(model, ids, 1, temperature=0)[0, -1])))
    assert len(steps) == 1  # the first greedy token is the stop token


def test_prompt_longer_than_the_context():
    with pytest.raises(ValueError, match="longer than the context"):
        next(Engine(tiny("gpt-mini")).stream(torch.zeros(1, 25, dtype=torch.long), 1))
