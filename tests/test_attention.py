"""Attention against hand-computed values; the SDPA and explicit paths agree; masks; GQA; RoPE; norms."""

import math

import pytest
import torch

from lmforge.nn import Attention, RMSNorm, apply_rope, attention_weights, causal_mask, rope_cos_sin
from lmforge.nn.positions import sinusoidal_table

# The worked example of docs/attention.md: three tokens, d_k = 3.
Q = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1]])
K = torch.tensor([[1.0, 1, 1], [0, 0, 1], [1, 0, 1]])
V = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]])


def test_scores_by_hand():
    assert torch.equal(Q @ K.T, torch.tensor([[2.0, 1, 2], [1, 0, 0], [3, 1, 2]]))


def test_softmax_weights_and_output_by_hand():
    w = attention_weights(Q, K)
    # row 1: softmax([2, 1, 2] / sqrt 3) = e^a / (2 e^a + e^b) with a = 2/sqrt3, b = 1/sqrt3
    a, b = 2 / math.sqrt(3), 1 / math.sqrt(3)
    r1 = [math.exp(a) / (2 * math.exp(a) + math.exp(b)), math.exp(b) / (2 * math.exp(a) + math.exp(b))]
    assert w[0].tolist() == pytest.approx([r1[0], r1[1], r1[0]], abs=1e-6)
    expected_w = [[0.3904, 0.2192, 0.3904], [0.4711, 0.2645, 0.2645], [0.5329, 0.1679, 0.2992]]
    assert torch.allclose(w, torch.tensor(expected_w), atol=1e-4)
    assert torch.allclose(w.sum(-1), torch.ones(3))
    expected_out = [[0.7808, 0.6096, 0.6096], [0.7355, 0.5289, 0.7355], [0.8321, 0.4671, 0.7008]]
    assert torch.allclose(w @ V, torch.tensor(expected_out), atol=1e-4)


def test_causal_weights_by_hand():
    w = attention_weights(Q, K, causal_mask(3))
    expected = [[1.0, 0, 0], [0.6405, 0.3595, 0], [0.5329, 0.1679, 0.2992]]
    assert torch.allclose(w, torch.tensor(expected), atol=1e-4)
    # the first token can only see itself, so its output is V[0]
    assert torch.allclose((w @ V)[0], V[0])


def test_normalising_by_the_sum_is_not_softmax():
    s = (Q @ K.T)[0]
    assert not torch.allclose(s / s.sum(), attention_weights(Q, K)[0], atol=1e-2)


def test_causal_mask_with_cached_keys():
    # two new queries after three cached keys: query i sits at absolute position 3 + i
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_fast_and_explicit_paths_agree(causal, kv_heads):
    torch.manual_seed(0)
    attn = Attention(d_model=32, n_head=4, n_kv_head=kv_heads, causal=causal).eval()
    x = torch.randn(2, 7, 32)
    fast, none = attn(x)
    slow, w = attn(x, need_weights=True)
    assert none is None and w.shape == (2, 4, 7, 7)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 7), atol=1e-5)
    if causal:
        assert torch.all(w.triu(1) == 0)


def test_gqa_equals_mha_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa = Attention(16, n_head=4, n_kv_head=2, causal=True).eval()
    mha = Attention(16, n_head=4, n_kv_head=4, causal=True).eval()
    D = 4
    wq, wk, wv = gqa.qkv.weight.split([16, 8, 8])
    bq, bk, bv = gqa.qkv.bias.split([16, 8, 8])
    rep = lambda t: t.view(2, D, -1).repeat_interleave(2, dim=0).reshape(4 * D, *t.shape[1:])  # noqa: E731
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.qkv.bias.copy_(torch.cat([bq, rep(bk), rep(bv)]))
        mha.proj.load_state_dict(gqa.proj.state_dict())
    x = torch.randn(1, 5, 16)
    assert torch.allclose(gqa(x)[0], mha(x)[0], atol=1e-5)


def test_causal_attention_ignores_the_future():
    torch.manual_seed(0)
    attn = Attention(16, 2, 2, causal=True).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[0, 4:] = torch.randn(2, 16)
    assert torch.allclose(attn(x)[0][0, :4], attn(y)[0][0, :4], atol=1e-6)


def test_rope_depends_only_on_relative_position():
    cos, sin = rope_cos_sin(16, 8)
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        qm = apply_rope(q.view(1, 1, 1, 8), cos[m], sin[m])
        kn = apply_rope(k.view(1, 1, 1, 8), cos[n], sin[n])
        return (qm * kn).sum().item()

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(0, 0) == pytest.approx((q * k).sum().item(), abs=1e-5)  # position 0: no rotation


def test_rope_by_hand():
    # head size 2, one frequency (theta^0 = 1): position p rotates (x0, x1) by p radians
    cos, sin = rope_cos_sin(4, 2)
    x = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    out = apply_rope(x, cos[2], sin[2]).flatten()
    assert out.tolist() == pytest.approx([math.cos(2.0), math.sin(2.0)], abs=1e-6)


def test_sinusoidal_by_hand():
    t = sinusoidal_table(3, 4)
    # PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...), d = 4
    assert t[0].tolist() == pytest.approx([0, 1, 0, 1])
    assert t[2].tolist() == pytest.approx([math.sin(2), math.cos(2), math.sin(2 / 100), math.cos(2 / 100)], abs=1e-6)


def test_norms_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    rms = math.sqrt((1 + 4 + 9 + 36) / 4)
    assert RMSNorm(4, eps=0.0)(x).flatten().tolist() == pytest.approx([1 / rms, 2 / rms, 3 / rms, 6 / rms], abs=1e-6)
    ln = torch.nn.LayerNorm(4, eps=0.0)
    mean, var = 3.0, ((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 4
    expected = [(v - mean) / math.sqrt(var) for v in (1, 2, 3, 6)]
    assert ln(x).flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_padded_causal_mask_by_hand():
    from lmforge.nn import padded_causal_mask

    keys = torch.tensor([[False, True, True]])  # one padding slot, then two tokens
    m = padded_causal_mask(keys, 3)[0, 0].int().tolist()
    assert m == [[1, 0, 0],  # the padding query sees only itself (never an all -inf row)
                 [0, 1, 0],
                 [0, 1, 1]]


@pytest.mark.parametrize("case", ["learned-bias", "bf16-short", "bf16-long", "no-grad", "float32"])
def test_training_takes_the_path_measured_faster_and_both_give_the_same_gradients(case, monkeypatch):
    from lmforge.nn import attention

    B, H, T, D = 2, 2, 600 if case == "bf16-long" else 12, 16
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g, requires_grad=case != "no-grad") for _ in range(3))
    bias = torch.randn(1, H, T, T, generator=g, requires_grad=case == "learned-bias")
    fused_calls = []
    real = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *a, **kw: fused_calls.append(1) or real(*a, **kw))
    bf16 = case.startswith("bf16")

    def run(force_explicit: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y, _ = attention.attend(q, k, v, causal=True, bias=bias, need_weights=force_explicit)
        return y.float()

    fused_calls.clear()
    y = run(False)
    expect_explicit = case in ("learned-bias", "bf16-short")
    assert (len(fused_calls) == 0) == expect_explicit
    assert torch.allclose(y, run(True), atol=0.05 if bf16 else 1e-5)
    if case == "learned-bias":  # the gradient reaches the bias by the explicit path as by the kernel's
        y.sum().backward()
        explicit_grad = bias.grad.clone()
        bias.grad = None
        monkeypatch.setattr(attention, "explicit_is_faster", lambda *a: False)
        run(False).sum().backward()
        assert torch.allclose(bias.grad, explicit_grad, atol=1e-4)
