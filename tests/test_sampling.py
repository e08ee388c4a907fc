"""Sampling: greedy, temperature, top-k, top-p, min-p and the repeat penalties against hand-computed
cases; seeded repeats; stop ids."""

import math
from dataclasses import replace

import pytest
import torch

from lmforge.config import GenerateConfig, ModelConfig
from lmforge.errors import LmforgeError
from lmforge.generate import Engine, generate, process_logits
from lmforge.generate.sampling import block_repeated_ngrams, choose, draw, penalize_repeats
from lmforge.models import build_model


def test_temperature_scales_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert torch.allclose(process_logits(logits, temperature=0.5), torch.tensor([[4.0, 2.0, 0.0]]))


def test_top_k_keeps_the_k_largest():
    out = process_logits(torch.tensor([[1.0, 4.0, 3.0, 2.0]]), top_k=2)
    assert torch.isinf(out[0, [0, 3]]).all() and out[0, 1] == 4.0 and out[0, 2] == 3.0


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda p: (~torch.isinf(process_logits(logits, top_p=p))).sum().item()  # noqa: E731
    assert kept(0.5) == 1  # 0.5 alone reaches 0.5
    assert kept(0.6) == 2  # 0.5 + 0.3 = 0.8 >= 0.6
    assert kept(0.81) == 3
    assert kept(0.99) == 4
    # renormalised: with p = 0.6 the two kept tokens share 0.5 : 0.3
    p = torch.softmax(process_logits(logits, top_p=0.6), -1)
    assert math.isclose(p[0, 0].item(), 0.5 / 0.8, rel_tol=1e-5)


def test_min_p_scales_with_the_top_probability():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda m: (~torch.isinf(process_logits(logits, min_p=m))).sum().item()  # noqa: E731
    assert kept(0.2) == 3  # bar 0.1: 0.5, 0.3, 0.15 pass
    assert kept(0.31) == 2  # bar 0.155
    assert kept(0.61) == 1  # bar 0.305


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    history = torch.tensor([[-1, 0, 1, 1]])  # token 0 and 1 seen; -1 is padding
    out = penalize_repeats(logits, history, 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0, 0.5]]


def test_no_repeat_ngram_bans_the_token_that_completes_a_seen_ngram():
    logits = torch.zeros(2, 6)
    history = torch.tensor([[1, 2, 3, 1, 2], [-1, 4, 5, 4, 5]])
    out = block_repeated_ngrams(logits, history, 3)  # row 0: "1 2" was followed by 3; row 1: "4 5" by 4
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [3]
    assert torch.isinf(out[1]).nonzero().flatten().tolist() == [4]
    once = block_repeated_ngrams(logits, history, 1)  # n = 1: no token twice
    assert torch.isinf(once[0]).nonzero().flatten().tolist() == [1, 2, 3]


def test_greedy_is_argmax():
    assert choose(torch.tensor([[0.1, 3.0, 0.2]]), GenerateConfig(temperature=0)).item() == 1


def test_the_draw_is_the_inverse_cdf_and_never_picks_a_zero():
    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0]])
    # F = [0, .1, .1, .7, 1, 1]: u F_V in [0, .1) -> 1, [.1, .7) -> 3, [.7, 1) -> 4
    for u, want in [(0.0, 1), (0.0999, 1), (0.1001, 3), (0.6999, 3), (0.7001, 4), (math.nextafter(1.0, 0.0), 4)]:
        assert draw(probs, torch.tensor([[u]])).item() == want, u
    big = torch.full((1, 4), 1e30)  # F_V rounds: u F_V must still stay below it
    assert draw(big / big.sum() * 3, torch.tensor([[math.nextafter(1.0, 0.0)]])).item() == 3
    with pytest.raises(LmforgeError, match="every token was ruled out"):
        draw(torch.tensor([[0.5, 0.5], [float("nan")] * 2]), torch.tensor([[0.3], [0.3]]))
    gen = GenerateConfig(temperature=1.0, seed=0)
    n = 40_000
    picks = choose(probs.log().expand(n, -1), gen, torch.Generator().manual_seed(1))
    freq = torch.bincount(picks, minlength=6).float() / n
    assert freq[[0, 2, 5]].sum() == 0
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)


def test_seeded_generation_repeats_and_differs_by_seed():
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=50, context_length=8, n_layer=1, n_head=2, d_model=16))
    x = torch.tensor([[1, 2, 3]])
    gen = lambda seed: generate(model, x, GenerateConfig(max_new_tokens=20, seed=seed))  # noqa: E731
    a, b, c = gen(7), gen(7), gen(8)
    assert len(a[0]) == 20 and a == b and a != c  # 23 tokens > the context of 8: the window slides


class AlwaysFour(torch.nn.Module):
    """A stand-in LM whose next token is always 4."""

    config = ModelConfig(vocab_size=5, context_length=8, n_layer=1, n_head=1, d_model=8)

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return torch.nn.functional.one_hot(torch.full(ids.shape, 4), 5).float() * 10


def test_generation_stops_at_a_stop_id():
    out = generate(AlwaysFour(), torch.tensor([[1], [2]]), GenerateConfig(max_new_tokens=10, temperature=0, stop_ids=(4,)))
    assert out == [[4], [4]]
    out = generate(AlwaysFour(), torch.tensor([[1]]), GenerateConfig(max_new_tokens=3, temperature=0))
    assert out == [[4, 4, 4]]


def test_bad_generation_settings_are_one_clear_error():
    for bad in (dict(top_p=0), dict(temperature=-1), dict(num_beams=2, num_samples=3), dict(repetition_penalty=0)):
        with pytest.raises(LmforgeError):
            GenerateConfig(**bad)


def test_every_token_ruled_out_is_an_error_for_greedy_and_beams_not_token_zero():
    with pytest.raises(LmforgeError, match="every token was ruled out"):
        choose(torch.tensor([[0.1, 0.2], [float("-inf")] * 2]), GenerateConfig(temperature=0))
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=6, context_length=16, n_layer=1, n_head=2, d_model=16))
    gen = GenerateConfig(max_new_tokens=8, temperature=0, no_repeat_ngram_size=1)  # 6 tokens, none twice
    for beams in (1, 3):
        with pytest.raises(LmforgeError, match="every token was ruled out"):
            Engine(model).generate(torch.tensor([[1, 2]]), replace(gen, num_beams=beams))
    for sampled in (False, True):  # a GPU decode notes it on the device and reads it every few steps
        with pytest.raises(LmforgeError, match="every token was ruled out"):
            Engine(model, sync_every=3).generate(torch.tensor([[1, 2]]), replace(gen, temperature=float(sampled)))
