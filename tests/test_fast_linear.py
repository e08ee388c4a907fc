"""Decode steps through a measured GEMV plan: the same products as nn.Linear, only where they are
meant to apply, weights laid out without changing a value, and everything put back afterwards."""

import threading

import pytest
import torch

from lmforge.config import GenerateConfig, model_config_from_preset
from lmforge.generate import Engine
from lmforge.generate.fast_linear import LinearRoutes, decode_linears, is_columns, plan_decode, set_layout
from lmforge.models import build_model


def small_gpt(seed=0):
    cfg = model_config_from_preset("gpt-mini", vocab_size=97, context_length=32, n_layer=2, d_model=64, n_head=4)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def test_numpy_linears_compute_what_torch_does_and_are_restored():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.Linear(40, 8, bias=False))
    threads = torch.get_num_threads()
    for shape in [(1, 1, 24), (3, 1, 24), (2, 5, 24), (24,)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x)
            with decode_linears(model, gemv="numpy"):
                assert "forward" in model[0].__dict__ and torch.get_num_threads() == 1
                with decode_linears(model, gemv="numpy"):  # nested: the outer routing stays
                    fast = model(x)
                assert "forward" in model[0].__dict__
        assert fast.shape == ref.shape and torch.allclose(fast, ref, atol=1e-6)
    assert "forward" not in model[0].__dict__ and torch.get_num_threads() == threads
    big = torch.randn(100, 24)
    with torch.no_grad():
        ref = model(big)
    with decode_linears(model, gemv="numpy"):  # with gradients, or too many rows, PyTorch computes it
        y = model(torch.randn(1, 24, requires_grad=True))
        assert y.requires_grad
        with torch.no_grad():
            assert torch.equal(model(big), ref)


def test_column_major_weights_keep_their_values_and_save_contiguous(tmp_path):
    from safetensors.torch import load_file

    from lmforge.tokenizer import train_char
    from lmforge.checkpoint import save_checkpoint

    model = small_gpt()
    x = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        ref = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            set_layout(m.weight, True)
    w = model.blocks[0].mlp.fc.weight
    assert is_columns(w) and not w.is_contiguous() and isinstance(w, torch.nn.Parameter)
    assert model.lm_head.weight is model.tok_emb.weight  # tying survives: the parameter is the same object
    with torch.no_grad():
        assert torch.allclose(model(x), ref, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    save_checkpoint(tmp_path / "run", model, train_char(["abc"]))
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.equal(before[k], v) for k, v in saved.items())
    set_layout(w, False)
    assert w.is_contiguous() and torch.equal(w, before["blocks.0.mlp.fc.weight"])


def test_plan_measures_once_per_model_on_copies_and_again_when_weights_are_replaced():
    model = small_gpt()
    before = {k: (v.data_ptr(), v.stride()) for k, v in model.state_dict().items()}
    plan = plan_decode(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert {id(m.weight) for m in linears} == set(plan.backend) and set(plan.backend.values()) <= {"torch", "numpy"}
    assert {k: (v.data_ptr(), v.stride()) for k, v in model.state_dict().items()} == before  # measured on copies
    assert len(plan.seconds) == 4 * len({tuple(m.weight.shape) for m in linears})  # 2 backends x 2 layouts
    assert plan_decode(model) is plan
    w = linears[0].weight
    w.data = w.data.clone()  # new storage: measured again
    assert plan_decode(model) is not plan
    forced = plan_decode(model, "torch")
    assert set(forced.backend.values()) == {"torch"}
    with pytest.raises(ValueError, match="gemv must be"):
        plan_decode(model, "blas")


def test_environment_asks_for_pytorch_and_its_library(monkeypatch):
    model = small_gpt()
    monkeypatch.setenv("LMFORGE_GEMV", "torch")
    engine = Engine(model)
    assert (engine.backend, engine.gemv) == ("torch", "torch") and "LMFORGE_GEMV" in engine.backend_reason
    with LinearRoutes(model, engine.gemv).active():  # nothing is routed, threads untouched
        assert all("forward" not in m.__dict__ for m in model.modules())
    assert not any(p.dtype == torch.float32 for p in model.to(torch.float64).parameters())
    assert plan_decode(model).backend == {}  # only float32 goes through NumPy


def test_generation_leaves_the_parameters_and_the_thread_count_as_they_were(monkeypatch):
    model = small_gpt()
    threads = torch.get_num_threads()
    before = {k: (v.data_ptr(), v.stride(), v.clone()) for k, v in model.state_dict().items()}
    gen = GenerateConfig(max_new_tokens=20, temperature=0)
    import lmforge.generate.fast_linear as fl

    real = fl.plan_decode
    monkeypatch.setattr(fl, "plan_decode", lambda m, choice="auto", repeats=3: _columns_plan(real(m, choice, repeats)))
    for engine in (Engine(model, backend="torch"), Engine(model, gemv="numpy"), Engine(model)):
        engine.generate([[1, 2, 3]], gen)
        stream = engine.stream([[1, 2, 3]], gen)
        next(stream), next(stream)  # a paused stream: nothing may stay changed meanwhile
        assert torch.get_num_threads() == threads and all("forward" not in m.__dict__ for m in model.modules())
        stream.close()
    after = model.state_dict()
    assert all(after[k].data_ptr() == p and after[k].stride() == s and torch.equal(after[k], v)
               for k, (p, s, v) in before.items())


def _columns_plan(plan):
    """Every weight through NumPy from a column-major copy: the case that used to re-lay parameters."""
    plan.backend = {k: "numpy" for k in plan.backend}
    plan.columns = {k: True for k in plan.columns}
    return plan


def test_overlapping_streams_on_one_model_keep_the_routing_until_the_last_leaves():
    model = small_gpt()
    threads = torch.get_num_threads()
    inside, release = threading.Barrier(2), threading.Event()

    def hold():
        with decode_linears(model, gemv="numpy"):
            inside.wait()
            release.wait()

    t = threading.Thread(target=hold)
    t.start()
    with decode_linears(model, gemv="numpy"):
        inside.wait()
    assert "forward" in model.blocks[0].mlp.fc.__dict__  # the other stream is still decoding
    release.set()
    t.join()
    assert "forward" not in model.blocks[0].mlp.fc.__dict__ and torch.get_num_threads() == threads


def test_engine_gives_the_same_tokens_every_way():
    model = small_gpt()
    gen = GenerateConfig(max_new_tokens=40, temperature=0)
    rows = [[1, 2, 3], [4, 5, 6, 7, 8]]
    ref = Engine(model, cpu_step="torch").generate(rows, gen)
    from lmforge.errors import LmforgeError
    from lmforge.generate.cpu import native_reason

    for step in ("numpy", "auto") + (("native",) if native_reason(model.eval()) is None else ()):  # native needs cc
        assert Engine(model, cpu_step=step).generate(rows, gen) == ref, step
    assert Engine(model, backend="torch", gemv="numpy").generate(rows, gen) == ref
    with pytest.raises(LmforgeError, match="backend must be one of auto, native, torch"):
        Engine(model, backend="blas")


def test_two_models_decoding_in_turn_give_the_thread_count_back():
    a, b = small_gpt(0), small_gpt(1)
    threads = torch.get_num_threads()
    first, second = decode_linears(a, gemv="numpy"), decode_linears(b, gemv="numpy")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # a's stream ends while b's goes on
    assert torch.get_num_threads() == 1 and "forward" in b.blocks[0].mlp.fc.__dict__
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == threads


def test_a_forward_someone_else_set_is_kept():
    model = small_gpt()
    fc = model.blocks[0].mlp.fc
    calls = []

    def hooked(x, real=fc.forward):
        calls.append(1)
        return real(x)

    fc.forward = hooked
    with torch.no_grad(), decode_linears(model, gemv="numpy"):
        model(torch.tensor([[1, 2, 3]]))
        assert fc.forward is hooked and "forward" in model.blocks[0].mlp.proj.__dict__
    assert fc.forward is hooked and calls and "forward" not in model.blocks[0].mlp.proj.__dict__


def test_planning_leaves_the_global_random_state_alone():
    model = small_gpt()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    plan_decode(model)
    assert torch.equal(torch.get_rng_state(), state)
