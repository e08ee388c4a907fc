"""The encoder-decoder model (models/seq2seq.py) and its parts: shapes, gradients, masks, positions,
the checkpoint round trip, and cached decoding against the plain re-reading loop."""

import pytest
import torch

from lmforge.config import GenerateConfig, ModelConfig, model_config_from_preset
from lmforge.generate import Engine
from lmforge.generate.cpu import library
from lmforge.generate.limits import cache_slots
from lmforge.models import build_model
from lmforge.nn import relative_bucket
from lmforge.tokenizer import train_char

SEQ2SEQ_PRESETS = ("t5-mini", "t5-small", "transformer-base", "bart-mini")
TINY = dict(n_layer=2, n_decoder_layer=3, d_model=32, n_head=4, d_ff=64, vocab_size=61, context_length=24,
            dropout=0.0)


def tiny(preset: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(model_config_from_preset(preset, **{**TINY, **kw})).eval()
    with torch.no_grad():  # relative biases and logits bias start at zero in some shapes: make them count
        for name, p in model.named_parameters():
            if "rel_bias" in name:
                p.normal_(0, 1.0)
        if model.config.logits_bias:
            model.final_logits_bias.normal_(0, 1.0)
    return model


def batch(seed=1, B=3, S=9, T=6, vocab=61):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, vocab, (B, S), generator=g)
    tgt = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 6:] = False  # row 1 has three padding slots
    return src, tgt, mask


@pytest.mark.parametrize("preset", SEQ2SEQ_PRESETS)
def test_every_preset_builds_and_maps_source_and_target_to_logits(preset):
    model = tiny(preset)
    src, tgt, mask = batch()
    logits = model(src, tgt, mask)
    assert logits.shape == (3, 6, 61)
    assert len(model.encoder.blocks) == 2 and len(model.decoder.blocks) == 3
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_t5_small_has_t5s_parameter_count():
    model = build_model(model_config_from_preset("t5-small"))
    assert 60.0e6 < model.num_params() < 61.0e6  # T5 paper: "60 million"; HF t5-small: 60,506,624
    assert model.lm_head.weight is model.tok_emb.weight


@pytest.mark.parametrize("preset", SEQ2SEQ_PRESETS)
def test_explicit_attention_path_equals_the_fused_one(preset):
    model = tiny(preset)
    src, tgt, mask = batch()
    fused = model(src, tgt, mask)
    memory, enc_w = model.encode(src, mask, need_weights=True)
    explicit, dec_w = model.decode(tgt, memory, mask, need_weights=True)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
    self_w, cross_w = dec_w[0]
    assert cross_w.shape == (3, 4, 6, 9) and self_w.shape == (3, 4, 6, 6)
    assert torch.all(cross_w[1, :, :, 6:] == 0)  # padding gets no attention
    assert torch.all(self_w[0].triu(1) == 0)  # the decoder never looks ahead
    torch.testing.assert_close(cross_w.sum(-1), torch.ones(3, 4, 6))


@pytest.mark.parametrize("preset", SEQ2SEQ_PRESETS)
def test_padding_a_source_changes_nothing(preset):
    model = tiny(preset)
    src, tgt, mask = batch()
    together = model(src, tgt, mask)[1]
    alone = model(src[1:2, :6], tgt[1:2])[0]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_decoder_cannot_see_future_targets():
    model = tiny("t5-mini")
    src, tgt, _ = batch()
    changed = tgt.clone()
    changed[:, 4:] = 7
    torch.testing.assert_close(model(src, tgt)[:, :4], model(src, changed)[:, :4])


def test_relative_buckets_by_hand():
    # bidirectional, 8 buckets over (4 before | 4 after), exact below 2, log-spaced up to distance 16
    rel = torch.tensor([-20, -5, -2, -1, 0, 1, 2, 5, 20])
    got = relative_bucket(rel, True, 8, 16).tolist()
    # d=5: 2 + floor(log(5/2)/log(16/2) * 2) = 2 + floor(0.881) = 2; d=20 -> capped at 3
    assert got == [3, 2, 2, 1, 0, 5, 6, 6, 7]
    causal = relative_bucket(rel, False, 8, 16).tolist()  # the future shares bucket 0
    # d=5: 4 + floor(log(5/4)/log(16/4) * 4) = 4 + floor(0.644) = 4; d=20 -> 7
    assert causal == [7, 4, 2, 1, 0, 0, 0, 0, 0]


def test_seq2seq_config_errors_name_the_setting():
    with pytest.raises(Exception, match="model.causal=false"):
        ModelConfig(family="seq2seq", causal=True)
    with pytest.raises(Exception, match="position=rope"):
        ModelConfig(family="seq2seq", causal=False, position="rope")
    with pytest.raises(Exception, match="decoder_start_id"):
        ModelConfig(family="seq2seq", causal=False, vocab_size=10, decoder_start_id=10)
    with pytest.raises(Exception, match="t5"):
        ModelConfig(position="t5")


def test_checkpoint_round_trip(tmp_path):
    from lmforge.checkpoint import load_checkpoint, save_checkpoint

    tok = train_char(["abcdefgh ijklmnop"])
    model = tiny("bart-mini", vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "run", model, tok)
    loaded, _ = load_checkpoint(tmp_path / "run")
    src, tgt, mask = batch(vocab=tok.vocab_size)
    torch.testing.assert_close(loaded.eval()(src, tgt, mask), model(src, tgt, mask))


def uncached(model, sources, gen):
    """The reference: re-run the whole decoder over the target so far at every step, no cache."""
    out = []
    for src in sources:
        s = torch.tensor([src])
        memory = model.encode(s)
        y = [model.config.decoder_start_id]
        for _ in range(gen.max_new_tokens):
            nxt = int(model.decode(torch.tensor([y]), memory)[0, -1].argmax())
            y.append(nxt)
            if nxt in gen.stop_ids:
                break
        out.append(y[1:])
    return out


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("preset", SEQ2SEQ_PRESETS)
def test_cached_greedy_decoding_equals_uncached(preset, backend):
    model = tiny(preset)
    sources = [[5, 9, 11, 3, 8, 2], [7, 4], [12, 13, 14, 15]]
    gen = GenerateConfig(max_new_tokens=12, temperature=0.0, stop_ids=(3,))
    assert Engine(model, backend).generate(sources, gen) == uncached(model, sources, gen)


def test_decoding_stops_at_the_decoders_context():
    model = tiny("bart-mini")
    out = Engine(model).generate([[5, 6]], GenerateConfig(max_new_tokens=100, temperature=0.0))
    assert len(out[0]) == model.config.context_length - 1


def test_sampling_is_seeded_and_beams_rank_the_best_first():
    model = tiny("t5-mini")
    engine = Engine(model)
    assert engine.backend == ("native" if library() is not None else "torch"), engine.backend_reason
    sample = GenerateConfig(max_new_tokens=8, temperature=1.0, seed=3, num_samples=2)
    assert engine.generate([[5, 6, 7], [8]], sample) == engine.generate([[5, 6, 7], [8]], sample)
    beams = engine.generate([[5, 6, 7], [8]], GenerateConfig(max_new_tokens=6, num_beams=4, num_samples=2))
    assert len(beams) == 4 and all(len(b) == 6 for b in beams)
    greedy = engine.generate([[5, 6, 7]], GenerateConfig(max_new_tokens=6, temperature=0.0))
    one_beam_width = engine.generate([[5, 6, 7]], GenerateConfig(max_new_tokens=6, num_beams=1, temperature=0.0))
    assert greedy == one_beam_width


def test_beam_search_scores_by_hand():
    """With beams, each returned hypothesis's summed log-probability (by the uncached model) is at
    least that of greedy decoding's: the search keeps the better candidate."""
    model = tiny("transformer-base")
    src = [[5, 9, 11, 3, 8]]
    gen = GenerateConfig(max_new_tokens=5, num_beams=4, length_penalty=0.0)
    best = Engine(model).generate(src, gen)[0]
    greedy = Engine(model).generate(src, GenerateConfig(max_new_tokens=5, temperature=0.0))[0]

    def score(y):
        ids = torch.tensor([[model.config.decoder_start_id] + y])
        with torch.no_grad():
            logp = model(torch.tensor(src), ids[:, :-1]).log_softmax(-1)
        return float(logp[0, torch.arange(len(y)), torch.tensor(y)].sum())
    assert score(best) >= score(greedy) - 1e-5


def test_memory_estimate_counts_the_decoder_and_the_source():
    model = tiny("t5-mini")
    assert cache_slots(model, longest_prompt=20, max_new_tokens=5) == 6  # start token + 5, not the source


def test_encoder_decoder_doc_numbers():
    import torch.nn.functional as F
    from pathlib import Path

    from lmforge.objectives.seq2seq import shift_right

    doc = (Path(__file__).resolve().parents[1] / "docs" / "encoder-decoder.md").read_text()
    rel = torch.tensor([-20, -5, -2, -1, 0, 1, 2, 5, 20])
    assert str(relative_bucket(rel, True, 8, 16).tolist()) in doc
    assert str(shift_right(torch.tensor([[7, 9, 2]]), 0, 0)[0].tolist()) == "[0, 7, 9]" and "[0, 7, 9]" in doc
    assert str(shift_right(torch.tensor([[7, 9, 2, -100]]), 0, 0)[0].tolist()) in doc
    z = torch.tensor([2.0, 1.0, 0.5, -1.0])
    nll = -z.log_softmax(-1)
    fmt = lambda v: "[" + ", ".join(f"{x:.4f}" for x in v) + "]"  # noqa: E731
    assert fmt(z.softmax(-1).tolist()) in doc and fmt(nll.tolist()) in doc
    smoothed = F.cross_entropy(z[None], torch.tensor([0]), label_smoothing=0.1).item()
    assert f"{nll[0]:.4f}" in doc and f"{nll.mean():.4f}" in doc and f"= {smoothed:.4f}" in doc
    assert abs(0.9 * nll[0] + 0.1 * nll.mean() - smoothed) < 1e-6


def test_span_corruption_doc_example():
    import re
    from pathlib import Path

    import numpy as np

    from lmforge.data.spans import span_corrupt

    doc = (Path(__file__).resolve().parents[1] / "docs" / "encoder-decoder.md").read_text()
    words = ("In the beginning God created the heaven and the earth . And the earth was without form , and void ; "
             "and darkness was upon the face of the deep . And the Spirit of God moved upon the face of the "
             "waters .").split()
    inp, tgt = span_corrupt(list(range(44)), list(range(1000, 1010)), np.random.default_rng(1), 0.15, 3.0, 999)
    name = lambda i: words[i] if i < 999 else "</s>" if i == 999 else f"<extra_id_{i - 1000}>"  # noqa: E731
    flat = " ".join(doc.split())  # the doc wraps its lines
    assert "input " + " ".join(map(name, inp)) in re.sub(r"\s+", " ", flat)
    assert "target " + " ".join(map(name, tgt)) in flat
    assert f"The input is {len(inp)} tokens and the target {len(tgt)}" in flat


@pytest.mark.parametrize("preset", ["t5-mini", "bart-mini"])
def test_rows_sharing_a_sources_keys_equal_rows_given_their_own_copies(preset):
    model = tiny(preset)
    src, tgt, mask = batch(B=2)
    kv = model.cross_kv(model.encode(src, mask))
    n = 3  # three decoder rows (beams) per source
    tgt = torch.randint(1, 61, (2 * n, 5), generator=torch.Generator().manual_seed(7))
    copied = [(k.repeat_interleave(n, 0), v.repeat_interleave(n, 0)) for k, v in kv]
    shared, w_shared = model.decode(tgt, None, mask, cross_kv=kv, need_weights=True)
    own, w_own = model.decode(tgt, None, mask.repeat_interleave(n, 0), cross_kv=copied, need_weights=True)
    assert torch.allclose(shared, own, atol=1e-5)
    for (_, a), (_, b) in zip(w_shared, w_own):  # the cross-attention weights, (6, H, 5, S) both
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="evenly"):
        model.decode(tgt[:5], None, mask, cross_kv=kv)


def test_a_state_shares_keys_while_rows_stay_grouped_and_copies_them_otherwise():
    from lmforge.generate.seq2seq import Seq2SeqState

    model = tiny("t5-mini")
    with torch.no_grad():
        state = Seq2SeqState(model, [[5, 9, 11], [7, 4]])
        state.select(torch.tensor([0, 0, 0, 1, 1, 1]))  # three beams each: the sources' own keys
        assert state.cross is state.source_kv and state.src_mask is state.source_mask
        state.step(torch.tensor([4, 5, 6, 7, 8, 9]))
        grouped = state.logits.clone()
        state.select(torch.tensor([3, 4, 5, 0, 1, 2]))  # sources swapped: copied per row
        assert state.cross is not state.source_kv and state.cross[0][0].size(0) == 6
        assert torch.allclose(state.logits, torch.cat([grouped[3:], grouped[:3]]))
        state.step(torch.tensor([1, 1, 1, 1, 1, 1]))
        swapped = state.logits.clone()
        again = Seq2SeqState(model, [[7, 4], [5, 9, 11]])  # the same rows, built in that order
        again.select(torch.tensor([0, 0, 0, 1, 1, 1]))
        again.step(torch.tensor([7, 8, 9, 4, 5, 6]))
        again.step(torch.tensor([1, 1, 1, 1, 1, 1]))
        assert torch.allclose(swapped, again.logits, atol=1e-5)


def test_a_state_keeps_one_copy_per_source_when_sources_leave():
    """Beam search drops the rows of a finished source: the sources left keep one shared copy each."""
    from lmforge.generate.seq2seq import Seq2SeqState

    model = tiny("t5-mini")
    with torch.no_grad():
        state = Seq2SeqState(model, [[5, 9, 11], [7, 4], [8, 8, 8, 8]])
        state.select(torch.tensor([0, 0, 1, 1, 2, 2]))
        state.step(torch.tensor([4, 5, 6, 7, 8, 9]))
        state.select(torch.tensor([0, 1, 4, 5]))  # source 1 is done
        assert state.cross[0][0].size(0) == 2 and state.src_mask.size(0) == 2
        state.step(torch.tensor([1, 2, 3, 4]))
        left = state.logits.clone()
        alone = Seq2SeqState(model, [[5, 9, 11], [8, 8, 8, 8]])
        alone.select(torch.tensor([0, 0, 1, 1]))
        alone.step(torch.tensor([4, 5, 8, 9]))
        alone.step(torch.tensor([1, 2, 3, 4]))
        assert torch.allclose(left, alone.logits, atol=1e-5)


@pytest.mark.parametrize("preset", ["t5-mini", "bart-mini"])
def test_beam_batches_shrink_as_sources_finish_and_match_each_source_alone(preset):
    model = tiny(preset)
    rows_seen = []
    model.decoder.blocks[0].register_forward_pre_hook(lambda m, args: rows_seen.append(args[0].size(0)))
    sources = [[5, 9, 11, 3, 8, 2], [7, 4], [12, 13, 14, 15], [20, 21], [30]]
    gen = GenerateConfig(max_new_tokens=14, num_beams=3, num_samples=2, stop_ids=(3, 7, 11, 19))
    together = Engine(model).generate(sources, gen)
    assert rows_seen[1] == 15 and min(rows_seen) < 15, rows_seen  # 5 x 3 beams after the start step, fewer later
    assert rows_seen[1:] == sorted(rows_seen[1:], reverse=True)
    assert together == [h for s in sources for h in Engine(model).generate([s], gen)]


def test_under_bfloat16_autocast_the_cache_holds_bfloat16_and_steps_match_the_full_decode():
    """The self-attention cache takes autocast's dtype (a float32 cache would convert every stored key at
    every read); each cached step's logits equal re-running the decoder over the whole target."""
    from lmforge.generate.seq2seq import Seq2SeqState

    model = tiny("t5-mini")
    sources = [[5, 9, 11, 3, 8, 2], [7, 4, 6, 6, 1, 9]]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        state = Seq2SeqState(model, sources, reserve=4)
        assert state.cache.layers[0].k.dtype == torch.bfloat16
        memory = model.encode(torch.tensor(sources))
        for tok in ([4, 8], [9, 1], [2, 2]):
            state.step(torch.tensor(tok))
            full = model.decode(state.history, memory)[:, -1]
            assert torch.allclose(state.logits.float(), full.float(), atol=0.05, rtol=0.02)
