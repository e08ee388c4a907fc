"""Several models in one server, and a newer checkpoint swapped in while it serves (serve/models.py):
32 streams across a reload each come wholly from one set of weights and none fails; a broken
checkpoint (truncated, NaN, another shape) leaves the old weights serving; the old weights are freed."""

import gc
import json
import os
import threading
import time
import weakref

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import lmforge  # noqa: E402
from lmforge.checkpoint import save_checkpoint  # noqa: E402
from lmforge.config import model_config_from_preset  # noqa: E402
from lmforge.models import build_model  # noqa: E402
from lmforge.serve.app import create_app  # noqa: E402
from lmforge.tokenizer import train_bpe  # noqa: E402
from tests.servers import serving  # noqa: E402

TEXT = ["the cat sat on the mat and the dog sat on the log", "a bird in the hand is worth two in the bush"] * 20
KEY = {"Authorization": "Bearer k"}


def gpt(tok, seed: int, d_model: int = 32, **kw):
    torch.manual_seed(seed)
    cfg = model_config_from_preset("gpt-small", vocab_size=tok.vocab_size, context_length=96, n_layer=2, n_head=2,
                                   d_model=d_model, d_ff=64, dropout=0.0, **kw)
    return build_model(cfg)


@pytest.fixture()
def runs(tmp_path):
    tok = train_bpe(TEXT, 300)
    save_checkpoint(tmp_path / "a", gpt(tok, 0), tok, step=10)
    save_checkpoint(tmp_path / "b", gpt(tok, 1), tok, step=20)
    return tmp_path, tok


def greedy(run, prompt, n):
    return lmforge.load(run).generate(prompt, max_new_tokens=n, temperature=0.0)


def stream(url: str, prompt: str, n: int) -> dict:
    """One streamed completion: its text, the fingerprints its chunks carried, and how it ended."""
    text, prints, finish, done = "", set(), None, False
    body = {"model": "m", "prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=KEY, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            prints.add(chunk["system_fingerprint"])
            text += chunk["choices"][0]["text"]
            finish = chunk["choices"][0]["finish_reason"] or finish
    return {"text": text, "prints": prints, "finish": finish, "done": done}


def test_32_streams_across_a_reload_each_come_from_one_set_of_weights(runs):
    tmp, tok = runs
    prompt, n = "the cat", 60
    before, after = greedy(tmp / "a", prompt, n), greedy(tmp / "b", prompt, n)
    assert before != after
    app = create_app({"m": lmforge.load(tmp / "a")}, max_batch=4, max_queue=64, api_key="k", log=lambda *_: None)
    hub = app.state.models
    old_model = weakref.ref(hub.served["m"].current.lm.model)
    url, stop = serving(app)
    results, threads = [None] * 32, []

    def client(i):
        results[i] = stream(url, prompt, n)
    try:
        for i in range(16):  # the first wave: 4 decoding, 12 waiting in the old weights' queue
            threads.append(threading.Thread(target=client, args=(i,)))
            threads[-1].start()
        end = time.monotonic() + 60
        while hub.served["m"].current.leases < 16:
            assert time.monotonic() < end, "the first wave did not arrive"
            time.sleep(0.005)
        save_checkpoint(tmp / "a", gpt(tok, 1), tok, step=20)  # the same weights as run b, committed into run a
        r = httpx.post(f"{url}/v1/admin/reload", headers=KEY, timeout=60)
        assert r.status_code == 200 and r.json()["data"][0]["step"] == 20, r.text
        for i in range(16, 32):
            threads.append(threading.Thread(target=client, args=(i,)))
            threads[-1].start()
        for t in threads:
            t.join(timeout=120)
        models = httpx.get(f"{url}/v1/models", headers=KEY).json()["data"]
    finally:
        stop()
    assert all(r is not None and r["done"] and r["finish"] == "length" for r in results)
    assert all(len(r["prints"]) == 1 for r in results)  # every chunk of an answer from one version
    by_step = {"step10": before, "step20": after}
    for r in results:
        step = next(iter(r["prints"])).split("-")[1]
        assert r["text"] == by_step[step]  # and the whole answer is that version's greedy text
    steps = [next(iter(r["prints"])).split("-")[1] for r in results]
    assert steps[:16] == ["step10"] * 16 and steps[16:] == ["step20"] * 16
    assert models[0]["step"] == 20 and models[0]["fingerprint"].startswith("m-step20-")
    gc.collect()
    assert old_model() is None  # the old weights were let go once their last request had finished


def commit_broken(run, how: str, tok):
    """A checkpoint that must not load, committed as a trainer would (the weights file renamed in)."""
    if how == "truncated":
        data = (run / "model.safetensors").read_bytes()
        (run / "part.tmp").write_bytes(data[: len(data) // 2])
        os.replace(run / "part.tmp", run / "model.safetensors")
    elif how == "nan":
        model = gpt(tok, 3)
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = float("nan")
        save_checkpoint(run, model, tok, step=30)
    else:
        save_checkpoint(run, gpt(tok, 3, d_model=64), tok, step=30)


@pytest.mark.parametrize("how", ["truncated", "nan", "other shape"])
def test_a_broken_checkpoint_leaves_the_old_weights_serving(runs, how):
    tmp, tok = runs
    expected = greedy(tmp / "a", "the dog", 12)
    logged = []
    app = create_app({"m": lmforge.load(tmp / "a")}, api_key="k", log=logged.append, watch=0.05)
    url, stop = serving(app)
    try:
        commit_broken(tmp / "a", how, tok)
        time.sleep(0.5)  # ten looks at the marker: one failed load, logged once
        assert len([line for line in logged if "failed" in line]) == 1, logged
        r = httpx.post(f"{url}/v1/admin/reload", headers=KEY, timeout=60)
        assert r.status_code == 500 and r.json()["error"]["code"] == "reload_failed"
        assert "step 10 keeps serving" in logged[-1] and "\n" not in logged[-1]
        out = httpx.post(f"{url}/v1/completions", headers=KEY, json={"model": "m", "prompt": "the dog",
                                                                      "max_tokens": 12, "temperature": 0}).json()
        assert out["choices"][0]["text"] == expected and out["system_fingerprint"].startswith("m-step10-")
        assert httpx.get(f"{url}/v1/models", headers=KEY).json()["data"][0]["step"] == 10
        metrics = httpx.get(f"{url}/metrics").text
        assert 'lmforge_reloads_total{model="m",outcome="failed"} 2.0' in metrics
    finally:
        stop()


def test_a_load_that_fails_any_other_way_keeps_serving_and_the_watcher_goes_on(runs, monkeypatch):
    """Not only lmforge's own errors: out of memory while loading beside the old weights is refused the same
    way, and once the run holds a checkpoint that loads, the watcher picks it up."""
    import lmforge.serve.models as served_models

    tmp, tok = runs
    real, logged = served_models.load, []

    def out_of_memory(run):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    app = create_app({"m": lmforge.load(tmp / "a")}, api_key="k", log=logged.append, watch=0.05)
    url, stop = serving(app)
    try:
        metrics = httpx.get(f"{url}/metrics").text
        assert 'lmforge_reloads_total{model="m",outcome="failed"} 0.0' in metrics  # there before the first failure
        monkeypatch.setattr(served_models, "load", out_of_memory)
        save_checkpoint(tmp / "a", gpt(tok, 1), tok, step=20)
        time.sleep(0.5)
        failed = [line for line in logged if "failed" in line]
        assert len(failed) == 1 and "RuntimeError: CUDA out of memory. Tried to allocate" in failed[0], logged
        r = httpx.post(f"{url}/v1/admin/reload", headers=KEY, timeout=60)
        assert r.status_code == 500 and r.json()["error"]["code"] == "reload_failed"
        assert httpx.get(f"{url}/v1/models", headers=KEY).json()["data"][0]["step"] == 10
        monkeypatch.setattr(served_models, "load", real)
        save_checkpoint(tmp / "a", gpt(tok, 2), tok, step=30)  # a new marker: the watcher tries again
        end = time.monotonic() + 30
        while httpx.get(f"{url}/v1/models", headers=KEY).json()["data"][0]["step"] != 30:
            assert time.monotonic() < end, "the watcher stopped after a failed load"
            time.sleep(0.05)
    finally:
        stop()


def test_a_new_checkpoint_is_picked_up_by_watching_the_run(runs):
    tmp, tok = runs
    app = create_app({"m": lmforge.load(tmp / "a")}, log=lambda *_: None, watch=0.05)
    url, stop = serving(app)
    try:
        save_checkpoint(tmp / "a", gpt(tok, 1), tok, step=20)
        end = time.monotonic() + 30
        while httpx.get(f"{url}/v1/models").json()["data"][0]["step"] != 20:
            assert time.monotonic() < end, "the new checkpoint was not loaded"
            time.sleep(0.05)
        out = httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": "the cat", "max_tokens": 10,
                                                        "temperature": 0}, timeout=60).json()
        assert out["choices"][0]["text"] == greedy(tmp / "b", "the cat", 10)
        assert 'lmforge_model_step{model="m"} 20.0' in httpx.get(f"{url}/metrics").text
    finally:
        stop()


def test_two_models_each_answer_as_their_own_and_are_listed(runs):
    tmp, _ = runs
    app = create_app({"small": lmforge.load(tmp / "a"), "other": lmforge.load(tmp / "b")}, api_key="k")
    url, stop = serving(app)
    try:
        listed = {m["id"]: m for m in httpx.get(f"{url}/v1/models", headers=KEY).json()["data"]}
        assert set(listed) == {"small", "other"}
        assert listed["small"]["run"] == str(tmp / "a") and listed["other"]["step"] == 20
        assert listed["small"]["family"] == "gpt" and listed["small"]["parameters"] > 0
        for name, run in (("small", "a"), ("other", "b")):
            out = httpx.post(f"{url}/v1/completions", headers=KEY, json={"model": name, "prompt": "a bird",
                                                                          "max_tokens": 8, "temperature": 0}).json()
            assert out["choices"][0]["text"] == greedy(tmp / run, "a bird", 8) and out["model"] == name
        r = httpx.post(f"{url}/v1/completions", headers=KEY, json={"model": "nope", "prompt": "a"})
        assert r.status_code == 404 and "'small', 'other'" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "model_not_found"
        r = httpx.post(f"{url}/v1/admin/reload", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = httpx.post(f"{url}/v1/admin/reload", headers=KEY, json={"model": "other"})
        assert r.status_code == 200 and [d["model"] for d in r.json()["data"]] == ["other"]
    finally:
        stop()


def test_reloading_needs_an_api_key_on_the_server(runs):
    tmp, _ = runs
    url, stop = serving(create_app({"m": lmforge.load(tmp / "a")}))
    try:
        r = httpx.post(f"{url}/v1/admin/reload")
        assert r.status_code == 403 and "--api-key" in r.json()["error"]["message"]
    finally:
        stop()


def test_the_cli_serves_two_models_decoding_in_its_main_thread_and_reloads(runs):
    """`lmforge serve --model a=RUN --model b=RUN2`: one decoding loop for both models in the main thread."""
    import subprocess
    import sys

    from tests.servers import free_port

    tmp, tok = runs
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", "--model", f"a={tmp / 'a'}", "--model",
                             f"b={tmp / 'b'}", "--port", str(port), "--api-key", "k", "--watch", "0.1"],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < end, "the server did not start"
            time.sleep(0.1)
        ask = {"prompt": "a bird", "max_tokens": 8, "temperature": 0}
        for name, run in (("a", "a"), ("b", "b")):
            out = httpx.post(f"{url}/v1/completions", headers=KEY, json={"model": name, **ask}, timeout=60).json()
            assert out["choices"][0]["text"] == greedy(tmp / run, "a bird", 8)
        save_checkpoint(tmp / "a", gpt(tok, 1), tok, step=20)  # run a now holds run b's weights
        while httpx.get(f"{url}/v1/models", headers=KEY).json()["data"][0]["step"] != 20:
            assert time.monotonic() < end + 30, "the new checkpoint was not loaded"
            time.sleep(0.1)
        out = httpx.post(f"{url}/v1/completions", headers=KEY, json={"model": "a", **ask}, timeout=60).json()
        assert out["choices"][0]["text"] == greedy(tmp / "b", "a bird", 8)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "reloaded 'a': step 10 -> 20" in err


@pytest.mark.parametrize("args, words", [
    (["--model", "nameless"], "NAME=RUN"),
    (["--model", "a=x", "--model", "a=y"], "two models are named 'a'"),
    ([], "give a run to serve"),
    (["--model", "a={a}", "--canary", "missing.tsv"], "canary file missing.tsv does not exist"),
    (["--model", "a={a}", "--watch", "-1"], "--watch"),
    (["--model", "a={a}", "--canary", "b=x.tsv"], "names the model 'b', which this server does not serve; it serves a"),
])
def test_serve_refuses_bad_arguments_in_one_sentence(runs, capsys, args, words):
    from lmforge.cli import main

    tmp, _ = runs
    code = main(["serve", *[a.format(a=tmp / "a") for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
