"""Weight-only quantisation: the formulas by hand, the kernels against the dequantised product, a
quantised run through every front door, and every bad input refused with nothing written."""

import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.cli import main
from lmforge.config import GenerateConfig
from lmforge.compress.quantize import quantize_model
from lmforge.nn import quantized as qz
from lmforge.nn.quantized import QuantLinear, dequantize, pack_int4, quantize_int4, quantize_int8, unpack_int4
from tests.servers import tiny_run

TEXT = ["the cat sat on the mat and the dog sat on the log"] * 20


def test_int8_of_one_row_by_hand():
    w = torch.tensor([[0.5, -1.27, 0.3, 0.004]])
    q, s = quantize_int8(w, 4)
    assert s.item() == pytest.approx(0.01)  # max |w| / 127
    assert q.tolist() == [[50, -127, 30, 0]]  # round(w / s)
    assert (dequantize(q, s, None, 8) - w).abs().max().item() == pytest.approx(0.004, abs=1e-6)  # <= s / 2


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_errs_by_at_most_half_a_step(symmetric):
    torch.manual_seed(0)
    w = torch.randn(16, 128)
    u, s, z = quantize_int4(w, 32, symmetric)
    assert u.max() <= 15 and (z is None) == symmetric
    back = dequantize(pack_int4(u, 32), s, z, 4)
    step = s.repeat_interleave(32, dim=1)
    assert ((back - w).abs() <= step / 2 + 1e-6).all()


def test_int4_packing_puts_the_two_halves_of_a_group_in_one_byte():
    u = torch.arange(8, dtype=torch.uint8).reshape(1, 8)  # one row, two groups of 4: [0 1 2 3] [4 5 6 7]
    p = pack_int4(u, 4)
    assert p.tolist() == [[0 | 2 << 4, 1 | 3 << 4, 4 | 6 << 4, 5 | 7 << 4]]
    assert torch.equal(unpack_int4(p, 4), u)


@pytest.mark.parametrize("bits,group,symmetric", [(8, None, True), (8, 16, True), (4, 16, True), (4, 32, False)])
def test_quantlinear_is_the_dequantised_product_tile_by_tile(monkeypatch, bits, group, symmetric):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 40)
    q = QuantLinear.from_linear(linear, bits, group, symmetric)
    x = torch.randn(3, 5, 64)
    want = F.linear(x, q.dequantized(), q.bias)
    monkeypatch.setattr(qz, "TILE", 64 * 7)  # 7 rows a tile: 6 tiles, the last one short
    assert torch.allclose(q(x), want, atol=1e-5)
    assert (q.dequantized() - linear.weight).abs().max() <= q.scales.max() / 2 + 1e-6


def _native():
    from lmforge.generate.cpu.step import library

    if library() is None:
        pytest.skip("no C compiler here: the compiled kernels cannot be built")


@pytest.mark.parametrize("bits,group,symmetric", [(8, None, True), (8, 48, True), (4, 64, True), (4, 32, False),
                                                  (4, 6, False)])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_the_compiled_kernel_equals_the_dequantised_product(bits, group, symmetric, rows):
    _native()
    from lmforge.generate.cpu.step import linear, rounds_inputs

    torch.manual_seed(1)
    q = QuantLinear.from_linear(torch.nn.Linear(192, 37), bits, group, symmetric)  # 37 outputs: a short last block
    x = torch.randn(rows, 192)
    exact = x.bfloat16().float() if rounds_inputs(q) else x  # bf16 products: dequant(W) . bf16(x), summed in fp32
    assert torch.allclose(linear(q, x, 2), F.linear(exact, q.dequantized(), q.bias), atol=1e-4)
    if rounds_inputs(q):  # and every row's sums are its own: the rows alone give the rows together
        assert torch.equal(torch.cat([linear(q, x[i:i + 1], 2) for i in range(rows)]), linear(q, x, 2))


def _gpt(width: int) -> torch.nn.Module:
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model

    torch.manual_seed(0)
    return build_model(model_config_from_preset("gpt-small", vocab_size=300, context_length=64, n_layer=2, n_head=2,
                                                d_model=width, d_ff=2 * width, dropout=0.0)).eval()


@pytest.mark.parametrize("bits,group,width", [(8, None, 32), (4, 16, 32), (4, 64, 128)])
def test_the_compiled_decode_step_reads_the_integers(bits, group, width):
    _native()
    from lmforge.generate.cpu.step import NativeDecoder, rounds_inputs
    from lmforge.generate.kv_cache import KVCache

    model = _gpt(width)
    quantize_model(model, bits, group)
    ids = torch.tensor([[5, 9, 11, 3]])
    with torch.no_grad():
        want = model(ids)[0, -1]
    step, cache = NativeDecoder(model), KVCache.for_model(model, 1, 16)
    for pos in range(4):
        got = step(ids[:, pos], pos, torch.zeros(1, dtype=torch.int32), cache)
    # bfloat16 inputs (8 significant bits) move the logits by about 2^-9 of their size; float32 by nothing
    assert torch.allclose(got[0], want, atol=3e-2 if rounds_inputs(model.lm_head) else 1e-4)


def test_decoding_a_short_prompt_never_makes_float_weights(monkeypatch):
    _native()
    from lmforge.generate.engine import Engine

    model = _gpt(128)
    quantize_model(model, 4, 64)
    engine = Engine(model, backend="native")
    want = engine.generate([[5, 9, 11, 3]], GenerateConfig(max_new_tokens=6, temperature=0.0))

    def refuse(self, rows=None):
        raise AssertionError("float32 weights were made while decoding")

    monkeypatch.setattr(QuantLinear, "dequantized", refuse)  # the prefill and every step read the integers
    assert Engine(model, backend="native").generate([[5, 9, 11, 3]], GenerateConfig(max_new_tokens=6, temperature=0.0)) == want


@pytest.fixture
def quantised(tmp_path):
    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["quantize", str(run), "--bits", "4", "--group-size", "16", "--out", str(tmp_path / "q4"), "--json"]) == 0
    return run, tmp_path / "q4"


def test_a_quantised_run_keeps_the_float_models_outputs_closely_and_is_smaller(quantised):
    import lmforge

    run, q4 = quantised
    cfg = json.loads((q4 / "config.json").read_text())["quantization"]
    assert cfg["bits"] == 4 and cfg["group_size"] == 16 and "lm_head" in cfg["modules"]
    assert (q4 / "model.safetensors").stat().st_size < (run / "model.safetensors").stat().st_size
    a, b = lmforge.load(str(run)), lmforge.load(str(q4))
    ids = torch.tensor([a.tokenizer.encode("the cat sat on the mat")])
    la, lb = a.model(ids), b.model(ids)
    la, lb = (la[0] if isinstance(la, tuple) else la), (lb[0] if isinstance(lb, tuple) else lb)
    assert (la.softmax(-1) - lb.softmax(-1)).abs().max() < 0.05
    assert any(isinstance(m, QuantLinear) for m in b.model.modules())


def test_a_quantised_run_keeps_its_sources_recipe_and_chat_files_but_not_its_training_history(tmp_path):
    run = tiny_run(tmp_path / "run", TEXT)
    side = {"tokenizer_config.json": '{"chat_template": "{{ messages }}"}', "generation_config.json": '{"eos_token_id": 2}',
            "recipe.yaml": "task:\n  text_column: review\n"}
    for name, body in side.items():
        (run / name).write_text(body)
    (run / "metrics.jsonl").write_text("{}\n")
    assert main(["quantize", str(run), "--bits", "8", "--out", str(tmp_path / "q8")]) == 0
    for name, body in side.items():
        assert (tmp_path / "q8" / name).read_text() == body
    assert not (tmp_path / "q8" / "metrics.jsonl").exists()


def test_a_quantised_run_generates_evaluates_and_serves(quantised, tmp_path, capsys):
    run, q4 = quantised
    assert main(["generate", str(q4), "the cat", "--max-new-tokens", "8", "--temperature", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out
    text = tmp_path / "eval.txt"
    text.write_text(" ".join(TEXT), encoding="utf-8")
    assert main(["eval", str(q4), "--file", str(text), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] > 1
    from fastapi.testclient import TestClient

    import lmforge
    from lmforge.serve.app import create_app

    with TestClient(create_app(lmforge.load(str(q4)), name="q4")) as client:
        r = client.post("/v1/completions", json={"model": "q4", "prompt": "the cat", "max_tokens": 5, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("flags,says", [
    (["--bits", "3"], "--bits 3 is not supported"),
    (["--bits", "4", "--group-size", "24"], "does not divide the width"),
    (["--bits", "4", "--group-size", "7"], "must be an even number"),
])
def test_bad_settings_say_one_sentence_and_write_nothing(tmp_path, capsys, flags, says):
    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["quantize", str(run), *flags, "--out", str(tmp_path / "q")]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_a_quantised_run_is_not_quantised_again(quantised, tmp_path, capsys):
    _, q4 = quantised
    assert main(["quantize", str(q4), "--bits", "8", "--out", str(tmp_path / "again")]) == 2
    assert "already quantised" in capsys.readouterr().err and not (tmp_path / "again").exists()


@pytest.mark.parametrize("content,says", [(b"", "is empty"), (b"\x00\x01binary\x00" * 50, "binary")])
def test_an_empty_or_binary_calibration_file_is_refused(tmp_path, capsys, content, says):
    run = tiny_run(tmp_path / "run", TEXT)
    calib = tmp_path / "calib.txt"
    calib.write_bytes(content)
    assert main(["quantize", str(run), "--bits", "4", "--group-size", "16", "--calibration", str(calib),
                 "--out", str(tmp_path / "q")]) == 2
    assert says in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_a_calibrated_quantisation_says_so_and_loads(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    calib = tmp_path / "calib.txt"
    calib.write_text("the dog sat on the log and the cat sat on the mat\n" * 40, encoding="utf-8")
    assert main(["quantize", str(run), "--bits", "4", "--group-size", "16", "--calibration", str(calib),
                 "--out", str(tmp_path / "q"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "clip"
    assert main(["generate", str(tmp_path / "q"), "the cat", "--max-new-tokens", "4", "--temperature", "0"]) == 0


def test_calibrated_clipping_errs_no_more_than_round_to_nearest_on_what_the_layer_sees():
    from lmforge.compress.quantize import clipped_layer

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight[:, 0] *= 8  # an outlier column that round-to-nearest spends its range on
    x = torch.randn(512, 64) * torch.linspace(0.1, 2, 64)
    energy = (x * x).mean(0)
    plain = QuantLinear.from_linear(linear, 4, 16, False)
    clipped = clipped_layer(linear, 4, 16, False, energy)
    err = lambda q: ((q(x) - linear(x)) ** 2).mean().item()  # noqa: E731
    assert err(clipped) <= err(plain) * 1.0001


def test_decoding_in_pytorch_routes_the_integer_layers_to_the_compiled_kernel(quantised, monkeypatch):
    _native()
    import lmforge
    from lmforge.generate.cpu import step
    from lmforge.generate.fast_linear import LinearRoutes

    _, q4 = quantised
    lm = lmforge.load(str(q4), backend="torch")
    calls = []
    kernel = step.linear
    monkeypatch.setattr(step, "linear", lambda m, x, t: calls.append(x.numel() // x.shape[-1]) or kernel(m, x, t))
    ids = torch.tensor([[5, 9]])
    with torch.no_grad():
        want = lm.model(ids)  # two rows per product: the tiles of QuantLinear.forward's own path
        with LinearRoutes(lm.model).active():
            got = lm.model(ids)
    want, got = (want[0] if isinstance(want, tuple) else want), (got[0] if isinstance(got, tuple) else got)
    assert calls and max(calls) == 2 and torch.allclose(got, want, atol=1e-4)
    assert all("forward" not in m.__dict__ for m in lm.model.modules())  # the routes are gone on leaving
    native = lmforge.load(str(q4), backend="native")
    prompt = "the cat sat"
    assert lm.generate(prompt, max_new_tokens=12, temperature=0) == native.generate(prompt, max_new_tokens=12,
                                                                                     temperature=0)


def test_a_quantised_classifier_predicts_as_the_float_one(fine_tuned_classifier, tmp_path):
    from lmforge.train.predict import predict_file

    run, data = fine_tuned_classifier
    assert main(["quantize", str(run), "--bits", "8", "--out", str(tmp_path / "q8")]) == 0
    _, float_report = predict_file(run, str(data), tmp_path / "f.jsonl")
    _, q_report = predict_file(tmp_path / "q8", str(data), tmp_path / "q.jsonl")
    assert q_report["accuracy"] >= float_report["accuracy"] - 0.02
    f = [json.loads(x)["label"] for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    q = [json.loads(x)["label"] for x in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert sum(a == b for a, b in zip(f, q)) >= 0.97 * len(f)


def test_a_quantised_run_exports_to_hugging_face_as_its_dequantised_weights(quantised, tmp_path):
    transformers = pytest.importorskip("transformers")
    import lmforge

    _, q4 = quantised
    lm = lmforge.load(str(q4))
    from lmforge.api import export_hf

    export_hf(lm, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([lm.tokenizer.encode("the cat sat on the mat")])
    with torch.no_grad():
        ours = lm.model(ids)
        theirs = hf(ids).logits
    ours = ours[0] if isinstance(ours, tuple) else ours
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert any(isinstance(m, QuantLinear) for m in lm.model.modules())  # the loaded run itself is untouched
