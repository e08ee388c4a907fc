"""GPT built from every preset family: shapes, gradients, tied weights, parameter and FLOP counts."""

import pytest
import torch

from lmforge.config import PRESETS, ModelConfig, model_config_from_preset
from lmforge.errors import LmforgeError
from lmforge.models import build_model

TINY = dict(vocab_size=97, context_length=16, n_layer=2, d_model=32)


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if PRESETS[p].get("family", "gpt") == "gpt"))
def test_every_decoder_preset_runs_small(preset):
    cfg = model_config_from_preset(preset, **TINY, n_head=4, n_kv_head=2 if "llama" in preset else 4,
                                   d_ff=None if "llama" not in preset else 64)
    torch.manual_seed(0)
    model = build_model(cfg)
    ids = torch.randint(0, 97, (2, 16))
    logits = model(ids)
    assert logits.shape == (2, 16, 97)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "none"])
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_position_and_norm_variants(position, norm_position):
    cfg = ModelConfig(**TINY, n_head=4, position=position, norm_position=norm_position)
    model = build_model(cfg).eval()
    ids = torch.randint(0, 97, (1, 10))
    # causal: changing the last token never changes earlier logits
    ids2 = ids.clone()
    ids2[0, -1] = (ids[0, -1] + 1) % 97
    assert torch.allclose(model(ids)[0, :-1], model(ids2)[0, :-1], atol=1e-5)


def test_gpt2_preset_has_124m_parameters_and_tied_head():
    model = build_model(model_config_from_preset("gpt2"))
    assert model.num_params() == 124_439_808  # OpenAI's GPT-2 small
    assert model.lm_head.weight is model.tok_emb.weight


def test_flops_per_token_formula():
    cfg = ModelConfig(**TINY, n_head=4)
    model = build_model(cfg)
    n = model.num_params(non_embedding=True) + 97 * 32
    assert model.flops_per_token() == 6 * n + 12 * 2 * 16 * 32


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = build_model(model_config_from_preset("gpt-small", vocab_size=512))
    std = model.blocks[0].attn.proj.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * 6) ** 0.5, rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("bad,match", [
    (dict(d_model=30, n_head=4), "not divisible"),
    (dict(n_head=4, n_kv_head=3), "multiple"),
    (dict(n_head=4, activation="tanh"), "activation"),
    (dict(n_head=4, dropout=1.5), "dropout"),
])
def test_invalid_shapes_are_clear_errors(bad, match):
    with pytest.raises(LmforgeError, match=match):
        ModelConfig(**{**TINY, **bad})


def test_unknown_preset():
    with pytest.raises(LmforgeError, match="unknown model preset 'gpt5'.*gpt-mini"):
        model_config_from_preset("gpt5")


def test_sequence_longer_than_context_is_rejected():
    model = build_model(ModelConfig(**TINY, n_head=4))
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 17, dtype=torch.long))


class ConcatCache:
    """The simplest per-layer KV cache: append along the sequence axis."""

    def __init__(self):
        self.k = self.v = None

    def update(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


@pytest.mark.parametrize("preset", ["gpt-mini", "llama-mini"])
def test_a_kv_cache_slots_in_and_matches_the_full_forward(preset):
    torch.manual_seed(0)
    cfg = model_config_from_preset(preset, vocab_size=97, context_length=16, n_layer=2)
    model = build_model(cfg).eval()
    ids = torch.randint(0, 97, (2, 9))
    full = model(ids)
    cache = [ConcatCache() for _ in range(cfg.n_layer)]
    with torch.no_grad():
        parts = [model(ids[:, :5], cache=cache)]  # prefill
        parts += [model(ids[:, 5:7], start_pos=5, cache=cache)]  # two tokens at once
        parts += [model(ids[:, t:t + 1], start_pos=t, cache=cache) for t in (7, 8)]  # one at a time
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)
