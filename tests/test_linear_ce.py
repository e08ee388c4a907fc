"""The chunked head + cross-entropy equals the plain one: loss and both gradients."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.objectives.linear_ce import linear_cross_entropy


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_the_plain_loss_and_gradients(reduction):
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    y[[3, 20]] = -100  # ignored targets
    ref = F.cross_entropy(h @ w.t(), y, reduction=reduction)
    gh, gw = torch.autograd.grad(ref * 1.7, (h, w))
    got = linear_cross_entropy(h, w, y, reduction=reduction, chunk_logits=50 * 8)  # 8 rows a chunk: 5 chunks
    fh, fw = torch.autograd.grad(got * 1.7, (h, w))
    assert torch.allclose(got, ref, atol=1e-5)
    assert torch.allclose(fh, gh, atol=1e-5) and torch.allclose(fw, gw, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(h, w, y, reduction=reduction, chunk_logits=100), ref, atol=1e-5)


def test_bf16_autocast_stays_close():
    torch.manual_seed(0)
    h, w, y = torch.randn(64, 32), torch.randn(40, 32) * 0.1, torch.randint(0, 40, (64,))
    ref = F.cross_entropy(h @ w.t(), y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w.requires_grad_(), y)
    got.backward()
    assert got.dtype == torch.float32 and abs(got.item() - ref.item()) < 2e-2 and w.grad.dtype == torch.float32


def test_clm_loss_uses_it_for_gpt_and_agrees_with_the_logits():
    from lmforge.config import ModelConfig
    from lmforge.models import build_model
    from lmforge.objectives.clm import clm_loss

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=70, context_length=16, n_layer=1, n_head=2, d_model=16))
    x, y = torch.randint(0, 70, (3, 16)), torch.randint(0, 70, (3, 16))
    plain = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    assert torch.allclose(clm_loss(model, x, y), plain, atol=1e-5)
