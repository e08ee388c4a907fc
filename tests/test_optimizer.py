"""The optimisers the trainer builds: AdamW's groups, and Adafactor's relative step worked by hand."""

import pytest
import torch

from lmforge.config import TrainConfig
from lmforge.errors import LmforgeError
from lmforge.train.trainer import make_optimizer


class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[0.3, -0.4], [0.5, 0.0]]))  # RMS = sqrt(0.5 / 4)
        self.b = torch.nn.Parameter(torch.tensor([2.0, -2.0]))  # RMS 2


def test_adamw_decays_matrices_only():
    opt = make_optimizer(Two(), TrainConfig(weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_adafactor_first_step_moves_each_tensor_by_lr_times_its_rms():
    """At step 1 the second moment is g^2 itself. For g = a b^T (rank one) the row/column factorisation
    r c^T / sum(r) = a^2 (b^2)^T is exact, so u = g / sqrt(v) = sign(g), RMS(u) = 1 (no clipping) and
    w -= lr * max(1e-3, RMS(w)) * sign(g). A vector keeps its full second moment: the same sign step."""
    model = Two()
    w0, b0 = model.w.detach().clone(), model.b.detach().clone()
    opt = make_optimizer(model, TrainConfig(optimizer="adafactor", lr=1e-2, weight_decay=0.0))
    assert isinstance(opt, torch.optim.Adafactor)
    model.w.grad = torch.outer(torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]))
    model.b.grad = torch.tensor([0.25, -4.0])
    opt.step()
    rms_w = (0.5 / 4) ** 0.5
    expected_w = w0 - 1e-2 * rms_w * torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    expected_b = b0 - 1e-2 * 2.0 * torch.tensor([1.0, -1.0])
    assert torch.allclose(model.w.detach(), expected_w, atol=1e-6)
    assert torch.allclose(model.b.detach(), expected_b, atol=1e-6)


def test_a_stacked_tensor_steps_each_block_as_a_tensor_of_its_own():
    """A fused q/k/v holds blocks of different sizes: each moves by lr * max(1e-3, RMS(block)) at step 1,
    as separate tensors would, not by the stack's RMS; the weight decay stays lr * wd * w."""
    from lmforge.train.adafactor import BlockwiseAdafactor

    small, large = torch.full((2,), 0.01), torch.full((3,), 1.0)
    stacked = torch.nn.Parameter(torch.cat([small, large]))
    apart = [torch.nn.Parameter(small.clone()), torch.nn.Parameter(large.clone())]
    for p in (stacked, *apart):
        p.grad = torch.ones_like(p)
    lr, wd = 1e-2, 0.1
    BlockwiseAdafactor([{"params": [stacked], "weight_decay": wd}], lr=lr, blocks={stacked: [2, 3]}).step()
    torch.optim.Adafactor([{"params": apart, "weight_decay": wd}], lr=lr).step()
    torch.testing.assert_close(stacked.detach(), torch.cat([p.detach() for p in apart]))
    by_hand = torch.cat([small * (1 - lr * wd) - lr * 0.01, large * (1 - lr * wd) - lr * 1.0])
    torch.testing.assert_close(stacked.detach(), by_hand, rtol=1e-5, atol=1e-7)
    plain = torch.nn.Parameter(torch.cat([small, large]))
    plain.grad = torch.ones_like(plain)
    torch.optim.Adafactor([plain], lr=lr).step()  # one RMS for both: sqrt((2 * 0.01^2 + 3) / 5) = 0.775
    torch.testing.assert_close(small - plain.detach()[:2], torch.full((2,), 0.00775), atol=5e-6, rtol=0)
    torch.testing.assert_close(stacked.detach()[:2], small * (1 - lr * wd) - 0.0001)  # the docs' numbers


def test_the_trainer_finds_the_fused_projections():
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model
    from lmforge.train.adafactor import BlockwiseAdafactor

    model = build_model(model_config_from_preset("t5-mini", vocab_size=64, n_layer=1, n_decoder_layer=1))
    opt = make_optimizer(model, TrainConfig(optimizer="adafactor"))
    assert isinstance(opt, BlockwiseAdafactor)
    fused = {model.encoder.blocks[0].attn.qkv.weight: [256] * 3, model.decoder.blocks[0].attn.qkv.weight: [256] * 3,
             model.decoder.blocks[0].cross.kv.weight: [256] * 2}
    assert {id(p): s for p, s in opt.blocks.items()} == {id(p): s for p, s in fused.items()}


def test_an_unknown_optimizer_is_refused_by_name():
    with pytest.raises(LmforgeError, match="use adamw or adafactor"):
        TrainConfig(optimizer="sgd").validate()


def test_the_docs_adafactor_step_is_the_one_the_optimiser_takes():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "encoder-decoder.md").read_text()
    model = Two()
    rms = model.w.detach().pow(2).mean().sqrt().item()
    opt = make_optimizer(model, TrainConfig(optimizer="adafactor", lr=1e-2, weight_decay=0.0))
    model.w.grad = torch.outer(torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]))
    opt.step()
    fmt = lambda rows: "[" + ", ".join("[" + ", ".join(f"{x:.4f}" for x in r) + "]" for r in rows) + "]"  # noqa: E731
    assert f"(RMS {rms:.4f})" in doc and f"0.01 * {rms:.4f} * sign(g) = {fmt(model.w.tolist())}" in doc
    assert "g = [[3.0, 0.5], [-6.0, -1.0]]" in doc and str(model.w.grad.tolist()) == "[[3.0, 0.5], [-6.0, -1.0]]"
    assert f"{1e-3 / rms:.2%}" in doc and f"{1e-3 / (256 * 64) ** -0.5:.0%}" in doc
