"""Decode steps through NumPy's BLAS: the same products as nn.Linear, only where they are meant to
apply, and everything put back afterwards."""

import pytest
import torch

from lmforge.config import GenerateConfig, model_config_from_preset
from lmforge.generate import Engine
from lmforge.generate.fast_linear import decode_linears, faster_gemv, use_numpy_gemv
from lmforge.models import build_model


def test_numpy_linears_compute_what_torch_does_and_are_restored():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.Linear(40, 8, bias=False))
    threads = torch.get_num_threads()
    for shape in [(1, 1, 24), (3, 1, 24), (2, 5, 24), (24,)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x)
            with decode_linears(model):
                assert "forward" in model[0].__dict__ and torch.get_num_threads() == 1
                with decode_linears(model):  # nested: the outer routing stays
                    fast = model(x)
                assert "forward" in model[0].__dict__
        assert fast.shape == ref.shape and torch.allclose(fast, ref, atol=1e-6)
    assert "forward" not in model[0].__dict__ and torch.get_num_threads() == threads
    big = torch.randn(100, 24)
    with torch.no_grad():
        ref = model(big)
    with decode_linears(model):  # with gradients, or too many rows, PyTorch computes it
        y = model(torch.randn(1, 24, requires_grad=True))
        assert y.requires_grad
        with torch.no_grad():
            assert torch.equal(model(big), ref)


def test_engine_gives_the_same_tokens_either_way(monkeypatch):
    cfg = model_config_from_preset("gpt-mini", vocab_size=97, context_length=32, n_layer=2, d_model=64, n_head=4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    gen = GenerateConfig(max_new_tokens=40, temperature=0)
    rows = [[1, 2, 3], [4, 5, 6, 7, 8]]
    assert Engine(model, gemv="numpy").generate(rows, gen) == Engine(model, gemv="torch").generate(rows, gen)
    with pytest.raises(ValueError, match="gemv must be"):
        Engine(model, gemv="blas").generate(rows, gen)
    monkeypatch.setenv("LMFORGE_GEMV", "torch")
    faster_gemv.cache_clear()
    assert faster_gemv(512, 2048) == "torch" and not use_numpy_gemv(model)
    faster_gemv.cache_clear()
    assert not use_numpy_gemv(model.to(torch.float64), "auto")  # only float32 goes through NumPy
