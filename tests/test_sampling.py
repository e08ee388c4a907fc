"""Sampling: greedy, temperature, top-k and top-p against hand-computed cases; seeded repeats."""

import math

import torch

from lmforge.config import ModelConfig
from lmforge.generate import generate, process_logits
from lmforge.generate.sampling import next_token
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


def test_greedy_is_argmax():
    assert next_token(torch.tensor([[0.1, 3.0, 0.2]]), temperature=0).item() == 1


def test_seeded_generation_repeats_and_differs_by_seed():
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=50, context_length=8, n_layer=1, n_head=2, d_model=16))
    x = torch.tensor([[1, 2, 3]])
    a = generate(model, x, 20, temperature=1.0, seed=7)
    b = generate(model, x, 20, temperature=1.0, seed=7)
    c = generate(model, x, 20, temperature=1.0, seed=8)
    assert a.shape == (1, 23) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :3], x)  # longer than the context of 8: the window slides


class AlwaysFour(torch.nn.Module):
    """A stand-in LM whose next token is always 4."""

    config = ModelConfig(vocab_size=5, context_length=8, n_layer=1, n_head=1, d_model=8)

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return torch.nn.functional.one_hot(torch.full(ids.shape, 4), 5).float() * 10


def test_generation_stops_at_eos():
    out = generate(AlwaysFour(), torch.tensor([[1], [2]]), 10, temperature=0, eos_id=4)
    assert out.tolist() == [[1, 4], [2, 4]]
    out = generate(AlwaysFour(), torch.tensor([[1]]), 3, temperature=0)
    assert out.tolist() == [[1, 4, 4, 4]]
