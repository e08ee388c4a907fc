"""nn.dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p), drawn from 16-bit numbers on a CPU."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.nn import Dropout, dropout
from lmforge.nn.dropout import LEVELS, drawn_here, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_each_element_is_kept_with_probability_one_minus_p_and_the_mean_is_kept(p):
    torch.manual_seed(0)
    n = 1 << 20
    keep, scale = keep_mask(torch.Size([n]), p)
    rounded = round(p * LEVELS) / LEVELS
    assert abs(rounded - p) <= 0.5 / LEVELS and scale == pytest.approx(1 / (1 - rounded), rel=1e-12)
    kept = keep.double().mean().item()
    assert abs(kept - (1 - rounded)) < 5 * math.sqrt(p * (1 - p) / n)  # five standard errors
    y = dropout(torch.ones(n), p)
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(scale, rel=1e-6)
    assert y.double().mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(p / (1 - p) / n))


def test_every_16_bit_lane_is_uniform_and_neighbours_are_independent():
    torch.manual_seed(1)
    keep, _ = keep_mask(torch.Size([1 << 20]), 0.5)
    lanes = keep.view(-1, 4).double()
    assert torch.allclose(lanes.mean(0), torch.full((4,), 0.5, dtype=torch.float64), atol=0.005)
    both = (lanes[:, 0] * lanes[:, 1]).mean().item()  # P(keep a and keep b) = 1/4 when independent
    assert both == pytest.approx(0.25, abs=0.005)


def test_the_gradient_flows_through_the_same_mask_and_bfloat16_stays_bfloat16():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.3)
    y.backward(torch.full_like(y, 2.0))
    kept = y.detach() != 0
    scale = (y[kept] / x[kept]).detach()
    assert torch.allclose(scale, scale[0].expand_as(scale))
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], 2 * scale)
    assert dropout(torch.randn(8, 8, dtype=torch.bfloat16), 0.1).dtype == torch.bfloat16


def test_the_identity_in_eval_and_at_p_zero_zeros_at_p_one_and_seeded_masks_repeat():
    x = torch.randn(10, 10)
    layer = Dropout(0.4)
    assert layer(x) is not x
    assert layer.eval()(x) is x and dropout(x, 0.0) is x and dropout(x, 0.5, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x)) and not drawn_here(x, 1.0)
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x, 0.5))
    with pytest.raises(ValueError):
        Dropout(1.5)


def test_attention_dropout_on_cpu_drops_weights_and_keeps_the_expected_output():
    from lmforge.nn import attend

    torch.manual_seed(4)
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    plain, _ = attend(q, k, v)
    outs = torch.stack([attend(q, k, v, dropout=0.5)[0] for _ in range(4000)])
    assert not torch.allclose(outs[0], plain)
    assert torch.allclose(outs.mean(0), plain, atol=0.06)  # E[dropout(w)] V = w V
    assert torch.allclose(F.scaled_dot_product_attention(q, k, v), plain, atol=1e-6)


@pytest.mark.parametrize("preset", ["gpt-mini", "bart-mini", "t5-mini"])
def test_a_causal_layer_training_with_dropout_never_sees_the_future(preset):
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model

    torch.manual_seed(5)
    cfg = model_config_from_preset(preset, n_layer=2, n_decoder_layer=2, d_model=32, n_head=4, d_ff=64, vocab_size=50,
                                   context_length=16, dropout=0.3)
    model = build_model(cfg).train()
    ids = torch.randint(1, 50, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = (ids[:, 6:] + 7) % 50  # only the tokens from position 6 on differ
    run = (lambda x: model(x)) if cfg.family == "gpt" else (lambda x: model(ids, x))
    torch.manual_seed(9)
    a = run(ids)
    torch.manual_seed(9)  # the same dropout masks
    b = run(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-5)  # positions before 6 never read what follows
    assert not torch.allclose(a[:, 6:], b[:, 6:])
