"""The native decode step (generate/cpu/decode_step.c): the same logits and cache as the PyTorch model for
every GPT shape it covers, left padding included; the same tokens through the engine; a clear reason
and the PyTorch path wherever it does not apply."""

import shutil

import pytest
import torch

from lmforge.config import ModelConfig, GenerateConfig
from lmforge.errors import LmforgeError
from lmforge.generate import Engine
from lmforge.generate.batch import DecodeState
from lmforge.generate.cpu import NativeDecoder, build, native_reason, step as native, tuner
from lmforge.models.gpt import GPT

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler on this machine")

SHAPES = {  # every switch the native step reads
    "gpt2": dict(),
    "gpt2-tanh-untied": dict(activation="gelu_tanh", tie_embeddings=False),
    "sinusoidal-relu": dict(position="sinusoidal", activation="relu"),
    "no-positions-no-bias": dict(position="none", bias=False),
    "llama-gqa": dict(position="rope", norm="rmsnorm", norm_eps=1e-6, activation="swiglu", bias=False,
                      tie_embeddings=False, n_kv_head=2),
    "llama-mha-bias": dict(position="rope", norm="rmsnorm", activation="swiglu", bias=True),
}


def model_of(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(vocab_size=97, context_length=32, n_layer=2, n_head=4, d_model=32, dropout=0.0), **kw})
    return GPT(cfg).eval()


@pytest.mark.parametrize("shape", sorted(SHAPES))
@torch.no_grad()
def test_native_steps_match_the_model_with_left_padding(shape):
    model = model_of(**SHAPES[shape])
    assert native_reason(model) is None
    rows = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]  # left padding of 0, 3 and 2 slots
    ref, nat = DecodeState(model, rows), DecodeState(model, rows, NativeDecoder(model))
    for _ in range(6):
        tok = ref.logits.argmax(-1)
        ref.step(tok)
        nat.step(tok)
        torch.testing.assert_close(nat.logits, ref.logits, atol=1e-4, rtol=1e-4)
    pos = ref.cache.pos
    for a, b in zip(ref.cache.layers, nat.cache.layers):
        torch.testing.assert_close(b.k[:, :, :pos], a.k[:, :, :pos], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.v[:, :, :pos], a.v[:, :, :pos], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", ["gpt2", "llama-gqa"])
def test_engine_tokens_are_the_same_natively_past_the_context_and_with_beams(shape):
    model = model_of(**SHAPES[shape])
    rows = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10]]
    for gen in (GenerateConfig(max_new_tokens=45, temperature=0),  # 52 tokens > context 32: re-prefills
                GenerateConfig(max_new_tokens=10, num_beams=3, num_samples=2),
                GenerateConfig(max_new_tokens=12, num_samples=3, top_k=10, seed=4)):
        ref = Engine(model, cpu_step="torch").generate(rows, gen)
        assert Engine(model, cpu_step="native").generate(rows, gen) == ref, gen


def test_what_the_native_step_does_not_cover_falls_back_with_a_reason(monkeypatch):
    model = model_of()
    assert "eval mode" in native_reason(model.train())
    model.eval()
    assert "pre-norm" in native_reason(model_of(norm_position="post"))
    assert "float32 on the CPU" in native_reason(model_of().double())
    handle = model.blocks[0].mlp.register_forward_hook(lambda *a: None)
    assert "hooked" in native_reason(model)
    with pytest.raises(LmforgeError, match="backend='native' cannot run here: .*hooked"):
        Engine(model, backend="native")
    engine = Engine(model)
    assert engine.backend == "torch" and "hooked" in engine.backend_reason
    handle.remove()
    engine = Engine(model, backend="native")
    handle = model.blocks[0].mlp.register_forward_hook(lambda *a: None)  # hooked after the choice: refused at the call
    with pytest.raises(LmforgeError, match="cannot run here: .*hooked"):
        engine.generate([[1, 2]], GenerateConfig(max_new_tokens=2))
    handle.remove()
    monkeypatch.setenv("LMFORGE_NATIVE", "0")
    assert Engine(model).backend == "torch" and "LMFORGE_NATIVE" in Engine(model).backend_reason
    assert Engine(model, backend="native").backend == "native"  # asked for by name: the variable is for auto
    monkeypatch.delenv("LMFORGE_NATIVE")
    decoder = NativeDecoder(model)
    state = DecodeState(model, [[1]] * 17)
    with pytest.raises(ValueError, match="up to 16 rows"):
        decoder(torch.ones(17, dtype=torch.long), 1, state.npad, state.cache)
    with pytest.raises(ValueError, match="outside the vocabulary of 97"):
        decoder(torch.tensor([97] * 17)[:1], 1, state.npad[:1], DecodeState(model, [[1]]).cache)


def test_without_a_compiler_the_engine_decodes_in_pytorch(monkeypatch, tmp_path):
    model = model_of()
    gen = GenerateConfig(max_new_tokens=8, temperature=0)
    ref = Engine(model, cpu_step="torch").generate([[1, 2, 3]], gen)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    assert native.library() is None
    assert "no-such-cc" in native_reason(model)
    engine = Engine(model)
    assert engine.backend == "torch" and "no-such-cc" in engine.backend_reason
    assert engine.generate([[1, 2, 3]], gen) == ref
    with pytest.raises(LmforgeError, match="cannot run here"):
        Engine(model, backend="native")


def test_the_compiled_step_is_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    compiler = shutil.which("cc") or shutil.which("gcc")
    build.build(compiler)
    built = list((tmp_path / "native").glob("decode-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    build.build(compiler)  # found, not compiled again
    assert [p.stat().st_mtime_ns for p in (tmp_path / "native").iterdir()] == [stamp]
    with pytest.raises(OSError, match="could not compile"):
        build.build("false")


def test_weights_replaced_mid_stream_are_read_safely_and_swapped_parts_fall_back(monkeypatch):
    model = model_of()
    gen = GenerateConfig(max_new_tokens=12, temperature=0)
    ref = Engine(model, cpu_step="torch").generate([[1, 2, 3]], gen)
    stream = Engine(model, cpu_step="native").stream([[1, 2, 3]], gen)
    got = [int(next(stream)[0]) for _ in range(3)]
    for p in model.parameters():  # new storage under every parameter while the stream holds the old
        p.data = p.data.clone()
    got += [int(t[0]) for t in stream]
    assert got == ref[0]
    from lmforge.generate.fast_linear import decode_linears

    with decode_linears(model, gemv="numpy"):  # lmforge's own routing is not a user's hook
        assert native_reason(model) is None
    untied = model_of(tie_embeddings=False)
    untied.lm_head.to(torch.bfloat16)
    assert "float32" in native_reason(untied)
    swapped = model_of()
    swapped.blocks[1].mlp.fc = torch.nn.Sequential(swapped.blocks[1].mlp.fc)
    assert "plain GPT parts" in native_reason(swapped)
    assert Engine(swapped).generate([[1, 2, 3]], gen) == Engine(swapped, cpu_step="torch").generate([[1, 2, 3]], gen)
    assert Engine(model, gemv="numpy").gemv == "numpy" and Engine(model, gemv="numpy").backend == "torch"
    monkeypatch.setenv("LMFORGE_GEMV", "torch")
    assert Engine(model).backend == "torch" and "LMFORGE_GEMV" in Engine(model).backend_reason
    assert Engine(model, backend="native")._native(1) is not None


def test_the_native_step_refuses_a_cache_or_padding_that_does_not_fit():
    model = model_of()
    decoder = NativeDecoder(model)
    state = DecodeState(model, [[1, 2], [3]])
    tok = torch.tensor([4, 5])
    with pytest.raises(ValueError, match="KV cache does not fit"):
        decoder(tok[:1], 2, state.npad[:1], state.cache)
    with pytest.raises(ValueError, match="does not fit slot 2"):
        decoder(tok, 2, torch.tensor([0, 3], dtype=torch.int32), state.cache)
    from lmforge.generate.kv_cache import KVCache

    big = KVCache.for_model(model, 2, max_len=40)  # more slots than the 32 positions the model knows
    with pytest.raises(ValueError, match="32-token context"):
        decoder(tok, 33, torch.zeros(2, dtype=torch.int32), big)


def run_tuner(tuner, seconds_at, steps):
    """Feed `tuner` `steps` step times from seconds_at(threads, step); the thread counts it ran."""
    used = []
    for i in range(steps):
        used.append(tuner.threads)
        tuner.record(seconds_at(tuner.threads, i))
    return used


def test_the_thread_tuner_keeps_the_faster_count_and_notices_a_change_in_load():
    idle, busy = (lambda t: 1.0 if t == 2 else 1.5), (lambda t: 5.0 if t == 2 else 2.0)

    settled = tuner.ThreadTuner(2)  # two threads 1.5x faster: trials of one thread lose, and grow apart
    used = run_tuner(settled, lambda t, i: idle(t), 10000)
    starts = [i for i in range(1, len(used)) if used[i] == 1 and used[i - 1] == 2]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert set(used[:32]) == {2} and settled.threads == 2 and settled.interval == settled.LONGEST
    assert gaps == sorted(gaps) and gaps[-1] > 3 * gaps[0] and used.count(1) < 0.01 * len(used)

    crowded = tuner.ThreadTuner(2)  # busy from the start: one thread is kept at the first trial, early on
    used = run_tuner(crowded, lambda t, i: busy(t), 3000)
    assert set(used[32:48]) == {1} and crowded.threads == 1 and used.count(2) < 0.05 * len(used)

    changing = tuner.ThreadTuner(2)  # another program runs from step 1000 to 3000
    used = run_tuner(changing, lambda t, i: busy(t) if 1000 <= i < 3000 else idle(t), 6000)
    assert used[999] == 2 and used[1000:3000].count(1) > 0.9 * 2000 and set(used[-500:]) == {2}

    wandering = tuner.ThreadTuner(2)  # both counts slow down together now and then: one thread never wins
    used = run_tuner(wandering, lambda t, i: (1.0 if t == 2 else 1.5) * (1.4 if i // 100 % 3 == 0 else 1.0), 10000)
    assert wandering.threads == 2 and used.count(1) < 0.03 * len(used)

    lone = tuner.ThreadTuner(1)
    assert set(run_tuner(lone, lambda t, i: 1.0, 200)) == {1}


def test_the_step_gives_the_same_logits_on_any_thread_count():
    model = model_of(**SHAPES["llama-gqa"])
    rows = [[5, 6, 7, 8, 9], [10, 11]]
    logits = []
    for threads in (1, 2, 3):
        decoder = NativeDecoder(model)
        decoder.tuner = tuner.ThreadTuner(threads)
        state = DecodeState(model, rows, decoder)
        for tok in ([1, 2], [3, 4], [5, 6]):
            state.step(torch.tensor(tok))
        logits.append(state.logits)
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
