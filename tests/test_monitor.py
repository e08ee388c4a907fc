"""Quality and drift gauges (serve/monitor.py, evaluate/drift.py): PSI against hand-computed values,
a classifier at /v1/classify with its drift gauge and warning, the canary's accuracy and perplexity
at start-up and after a reload, and the drift line of `lmforge predict`."""

import json
import math

import pytest
import torch

from lmforge.checkpoint import save_checkpoint
from lmforge.cli import main
from lmforge.config import model_config_from_preset
from lmforge.evaluate.drift import psi, reference_counts
from lmforge.models import build_model
from lmforge.tokenizer import train_bpe

TEXT = ["the cat sat on the mat and the dog sat on the log", "a bird in the hand is worth two in the bush"] * 20
KEY = {"Authorization": "Bearer k"}


def test_psi_worked_example_and_an_empty_label():
    # docs/monitoring.md: validation 50/50, traffic 80/20:
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5) = 0.3 x 0.470004 + 0.3 x 0.916291 = 0.415888
    assert psi({"pos": 50, "neg": 50}, {"pos": 80, "neg": 20}) == pytest.approx(0.415888, abs=1e-6)
    assert psi({"pos": 5, "neg": 5}, {"pos": 1, "neg": 1}) == 0.0  # the same shares: no drift
    # a label never predicted counts as a share of 1e-4: 0.5 ln 2 + 0.4999 ln(0.5 / 1e-4) = 0.346574 + 4.257745
    assert psi({"a": 1, "b": 1}, {"a": 7}, ["a", "b"]) == pytest.approx(4.604319, abs=1e-6)


def test_reference_counts_from_validation_or_else_the_test_confusion_matrix(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"validation_predicted": {"a": 3, "b": 1}}))
    assert reference_counts(tmp_path) == ({"a": 3, "b": 1}, "validation split")
    (tmp_path / "report.json").write_text(json.dumps({"test": {"labels": ["a", "b"],
                                                              "confusion_matrix": [[2, 1], [0, 4]]}}))
    assert reference_counts(tmp_path) == ({"a": 2, "b": 5}, "test split")  # column sums: what was predicted
    assert reference_counts(tmp_path / "nothing") is None


def always_neg_classifier(out, tok):
    """A GPT classifier whose head always says "neg", with a report.json of 50/50 validation predictions."""
    torch.manual_seed(0)
    cfg = model_config_from_preset("gpt-small", vocab_size=tok.vocab_size, context_length=64, n_layer=1, n_head=2,
                                   d_model=32, d_ff=64, dropout=0.0, head="classify", labels=["neg", "pos"])
    model = build_model(cfg)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([50.0, -50.0]))
    save_checkpoint(out, model, tok, step=7)
    (out / "report.json").write_text(json.dumps({"validation_predicted": {"neg": 50, "pos": 50}}))
    return out


@pytest.fixture()
def runs(tmp_path):
    tok = train_bpe(TEXT, 300)
    cls = always_neg_classifier(tmp_path / "cls", tok)
    torch.manual_seed(1)
    cfg = model_config_from_preset("gpt-small", vocab_size=tok.vocab_size, context_length=64, n_layer=2, n_head=2,
                                   d_model=32, d_ff=64, dropout=0.0)
    save_checkpoint(tmp_path / "gpt", build_model(cfg), tok, step=3)
    canary = tmp_path / "canary.tsv"
    canary.write_text("text\tlabel\nthe cat sat\tneg\na bird in the hand\tneg\nthe dog\tneg\nworth two\tpos\n")
    return tmp_path, cls, tmp_path / "gpt", canary


def by_hand_perplexity(run, texts):
    import lmforge

    lm = lmforge.load(run)
    nll, n = 0.0, 0
    for text in texts:
        ids = lm.encode_prompt(text) + [lm.tokenizer.eos_id]
        logp = torch.log_softmax(lm.model(torch.tensor([ids[:-1]])).float()[0], -1)
        nll -= sum(logp[i, t].item() for i, t in enumerate(ids[1:]))
        n += len(ids) - 1
    return math.exp(nll / n)


def test_classify_drift_gauge_warning_and_canary_gauges(runs):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    import lmforge
    from lmforge.serve.app import create_app
    from lmforge.serve.monitor import Monitor
    from tests.servers import serving

    tmp, cls, gpt, canary = runs
    logged = []
    monitor = Monitor({"cls": canary, "gpt": canary}, threshold=0.25, window=1000, log=logged.append)
    app = create_app({"cls": lmforge.load(cls), "gpt": lmforge.load(gpt)}, api_key="k", monitor=monitor,
                     log=logged.append)
    url, stop = serving(app)
    try:
        metrics = httpx.get(f"{url}/metrics").text
        assert 'lmforge_canary_accuracy{model="cls"} 0.75' in metrics  # 3 of the 4 rows are "neg"
        perplexity = by_hand_perplexity(gpt, ["the cat sat", "a bird in the hand", "the dog", "worth two"])
        gauge = next(line for line in metrics.splitlines() if line.startswith('lmforge_canary_perplexity{model="gpt"}'))
        assert float(gauge.split()[-1]) == pytest.approx(perplexity, rel=1e-4)
        r = httpx.post(f"{url}/v1/classify", headers=KEY, json={"model": "cls", "input": "the cat sat on the mat"})
        body = r.json()
        assert r.status_code == 200 and body["data"][0]["label"] == "neg"
        assert body["data"][0]["probabilities"]["neg"] == pytest.approx(1.0) and body["model"] == "cls"
        assert not any("shifted" in line for line in logged)  # 1 prediction: too few to warn
        r = httpx.post(f"{url}/v1/classify", headers=KEY, json={"model": "cls", "input": [f"text {i}" for i in range(50)]})
        assert [d["index"] for d in r.json()["data"]] == list(range(50))
        metrics = httpx.get(f"{url}/metrics").text
        assert 'lmforge_predicted_labels_total{label="neg",model="cls"} 51.0' in metrics
        # all 51 "neg" against 50/50: 0.5 ln(1 / 0.5) + 0.4999 ln(0.5 / 1e-4) = 4.604319
        value = float(next(line for line in metrics.splitlines()
                           if line.startswith('lmforge_prediction_psi{model="cls"}')).split()[-1])
        assert value == pytest.approx(4.604319, abs=1e-5)
        warnings = [line for line in logged if "shifted" in line]
        assert len(warnings) == 1 and "PSI 4.604" in warnings[0]
        httpx.post(f"{url}/v1/classify", headers=KEY, json={"model": "cls", "input": ["more", "text"]})
        assert len([line for line in logged if "shifted" in line]) == 1  # once per crossing, not per request
        # the wrong endpoint for a model, an empty input
        r = httpx.post(f"{url}/v1/classify", headers=KEY, json={"model": "gpt", "input": "a"})
        assert r.status_code == 400 and "/v1/completions" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/completions", headers=KEY, json={"model": "cls", "prompt": "a"})
        assert r.status_code == 400 and "/v1/classify" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/classify", headers=KEY, json={"model": "cls", "input": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
        r = httpx.post(f"{url}/v1/classify", headers=KEY, json={"model": "cls", "input": 5})
        assert r.status_code == 400 and r.json()["error"]["message"] == "input must be one of: str, list[str]"
        assert r.json()["error"]["param"] == "input"
        r = httpx.post(f"{url}/v1/classify", headers=KEY, json={"model": "cls", "input": "a", "pair": "b"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "pair"
        # after a reload the canary is scored again: a head that always says "pos" gets 1 of 4
        model, tok = lmforge.checkpoint.load_checkpoint(cls)
        with torch.no_grad():
            model.head.bias.copy_(torch.tensor([-50.0, 50.0]))
        save_checkpoint(cls, model, tok, step=8)
        assert httpx.post(f"{url}/v1/admin/reload", headers=KEY, json={"model": "cls"}).status_code == 200
        assert 'lmforge_canary_accuracy{model="cls"} 0.25' in httpx.get(f"{url}/metrics").text
    finally:
        stop()


def test_concurrent_classify_requests_are_batched_and_each_gets_its_own(runs):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    import concurrent.futures

    import lmforge
    from lmforge.serve.app import create_app
    from tests.servers import serving

    _, cls, _, _ = runs
    app = create_app({"cls": lmforge.load(cls)}, log=lambda *_: None)
    url, stop = serving(app)
    try:
        def ask(i):
            texts = [f"text {i} number {j}" for j in range(i + 1)]
            return i, httpx.post(f"{url}/v1/classify", json={"model": "cls", "input": texts}, timeout=60).json()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(8)))
        for i, body in answers:
            assert len(body["data"]) == i + 1 and all(d["label"] == "neg" for d in body["data"])
    finally:
        stop()


def test_predict_reports_the_drift_of_the_predicted_labels(runs, capsys):
    tmp, cls, _, _ = runs
    rows = tmp / "rows.csv"
    rows.write_text("text\n" + "\n".join(f"row {i}" for i in range(10)) + "\n")
    code = main(["predict", str(cls), "--file", str(rows), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    drift = json.loads(out)["report"]["drift"]
    assert drift["psi"] == pytest.approx(4.6043, abs=1e-4) and drift["shifted"] and drift["rows"] == 10
    assert drift["reference"] == "validation split"
    code = main(["predict", str(cls), "--file", str(rows), "--psi-threshold", "5"])
    out, _ = capsys.readouterr()
    assert code == 0 and "drift: PSI 4.6043 of the 10 predicted labels" in out and "within" in out


def test_canary_rows_with_labels_the_model_does_not_know_are_left_out_or_refused(runs, tmp_path):
    import lmforge
    from lmforge.errors import LmforgeError
    from lmforge.serve.monitor import canary_accuracy

    _, cls, _, _ = runs
    lm, logged = lmforge.load(cls), []
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("text\tlabel\nthe cat sat\tneg\nthe dog\tpos\na bird\tneutral\nworth two\tNEG\n")
    assert canary_accuracy(lm, mixed, 64, logged.append) == {"accuracy": 0.5, "rows": 2}  # neg right, pos wrong
    assert len(logged) == 1 and "'NEG', 'neutral'" in logged[0] and "it knows neg, pos" in logged[0]
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("text\tlabel\nthe cat sat\t0\nthe dog\t1\n")
    with pytest.raises(LmforgeError, match=r"no row of the canary file .* has a label the model knows \(neg, pos\)"):
        canary_accuracy(lm, unknown, 64, logged.append)


def test_canary_names_split_at_the_first_equals_sign(tmp_path):
    from lmforge.errors import LmforgeError
    from lmforge.serve.monitor import parse_canaries

    odd = tmp_path / "k=v"
    odd.mkdir()
    (odd / "c.tsv").write_text("text\tlabel\na\tneg\n")
    assert parse_canaries([f"m={odd / 'c.tsv'}"], ["m", "n"]) == {"m": odd / "c.tsv"}
    assert parse_canaries([str(odd / "c.tsv")], ["m", "n"]) == {"m": odd / "c.tsv", "n": odd / "c.tsv"}
    with pytest.raises(LmforgeError, match="names the model 'x', which this server does not serve; it serves m, n"):
        parse_canaries([f"x={odd / 'c.tsv'}"], ["m", "n"])


def test_a_drift_window_smaller_than_fifty_still_warns(runs):
    import asyncio

    import lmforge
    from lmforge.serve.models import Models
    from lmforge.serve.monitor import Monitor

    _, cls, _, _ = runs
    logged = []
    monitor = Monitor(threshold=0.25, window=10, log=logged.append)
    hub = Models({"cls": lmforge.load(cls)}, monitor=monitor, log=logged.append)
    version = hub.served["cls"].current

    async def classify():
        await monitor.classify(version, [f"text {i}" for i in range(9)])
        assert not any("shifted" in line for line in logged)  # the window is not full yet
        await monitor.classify(version, ["one more"])

    asyncio.run(classify())
    assert len([line for line in logged if "shifted" in line]) == 1 and "last 10 predictions" in logged[-1]
    version.close()


def test_predict_refuses_a_threshold_that_is_not_positive(runs, capsys):
    tmp, cls, _, _ = runs
    rows = tmp / "rows.csv"
    rows.write_text("text\nrow\n")
    code = main(["predict", str(cls), "--file", str(rows), "--psi-threshold", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--psi-threshold 0.0 cannot be used" in err and len(err.strip().splitlines()) == 1


def test_a_pair_classifier_takes_each_inputs_second_text_in_pair(runs):
    import asyncio

    import yaml

    import lmforge
    from lmforge.serve.errors import ServeError
    from lmforge.serve.models import Models
    from lmforge.tasks.base import padding_id
    from lmforge.tasks.classify import classify_texts

    tmp, cls, _, _ = runs
    tok = lmforge.load(cls).tokenizer
    torch.manual_seed(5)
    cfg = model_config_from_preset("gpt-small", vocab_size=tok.vocab_size, context_length=64, n_layer=1, n_head=2,
                                   d_model=32, d_ff=64, dropout=0.0, head="classify", labels=["no", "yes"])
    save_checkpoint(tmp / "nli", build_model(cfg), tok, step=4)
    (tmp / "nli" / "recipe.yaml").write_text(yaml.safe_dump({"task": {"kind": "classify", "text_pair_column": "hyp"}}))
    lm = lmforge.load(tmp / "nli")
    hub = Models({"nli": lm, "cls": lmforge.load(cls)}, log=lambda *_: None)
    nli, single = hub.served["nli"].current, hub.served["cls"].current
    texts, pairs = ["the cat sat on the mat", "a bird in the hand"], ["the dog sat", "worth two in the bush"]

    async def ask():
        got = await hub.monitor.classify(nli, texts, pairs)
        errors = []
        for version, p in ((nli, None), (single, pairs), (nli, pairs[:1])):
            with pytest.raises(ServeError) as e:
                await hub.monitor.classify(version, texts, p)
            errors.append((e.value.status, e.value.param, e.value.message))
        return got, errors

    got, errors = asyncio.run(ask())
    _, with_pairs = classify_texts(lm.model, tok, texts, 64, padding_id(tok), pairs)
    _, alone = classify_texts(lm.model, tok, texts, 64, padding_id(tok))
    assert not torch.allclose(with_pairs, alone)  # the second text changes the answer, so it must be used
    for row, p in zip(got, with_pairs):
        assert [row["probabilities"][n] for n in ("no", "yes")] == pytest.approx(p.tolist(), abs=1e-5)
    assert [(status, param) for status, param, _ in errors] == [(400, "pair")] * 3
    assert "its 'hyp' column" in errors[0][2] and "single texts" in errors[1][2] and "1 texts for 2" in errors[2][2]
    for version in (nli, single):
        version.close()
