"""`lmforge serve` (serve/app.py) driven over HTTP by the `openai` client: completions and chat, streaming
with usage, n, seeds, stop strings across tokens, many clients at once, and every bad request."""

import json
import threading
import time

import pytest
import torch

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import lmforge  # noqa: E402
from lmforge.checkpoint import save_checkpoint  # noqa: E402
from lmforge.config import model_config_from_preset  # noqa: E402
from lmforge.models import build_model  # noqa: E402
from lmforge.serve.app import create_app  # noqa: E402
from lmforge.tokenizer import train_bpe  # noqa: E402
from tests.servers import free_port, tiny_run  # noqa: E402
from tests.servers import serving as start  # noqa: E402

TEXT = ["the cat sat on the mat and the dog sat on the log", "a bird in the hand is worth two in the bush"] * 20


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("serve") / "tiny", TEXT)


def serving(lm, **kw):
    return start(create_app(lm, "tiny", **kw))


@pytest.fixture(scope="module")
def server(run):
    lm = lmforge.load(run)
    url, stop = serving(lm, max_batch=8, max_queue=64)
    try:
        yield url, lm, openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    finally:
        stop()


def greedy(lm, prompt, n):
    return lm.generate(prompt, max_new_tokens=n, temperature=0.0)


def test_completion_equals_the_library_and_counts_usage(server):
    _, lm, client = server
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text == greedy(lm, "the cat", 12)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens == len(lm.encode_prompt("the cat"))
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_chat_streams_chunks_usage_and_done(server):
    url, lm, client = server
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the dog"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and whole.choices[0].message.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    raw = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 3,
                                                         "stream": True}, timeout=60).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_n_choices_and_seeds_repeat(server):
    _, _, client = server
    ask = dict(model="tiny", prompt="a bird", max_tokens=8, temperature=1.0, n=3, seed=11)
    a, b = client.completions.create(**ask), client.completions.create(**ask)
    assert [c.index for c in a.choices] == [0, 1, 2] and [c.text for c in a.choices] == [c.text for c in b.choices]
    assert 3 <= a.usage.completion_tokens <= 3 * 8


def test_a_stop_string_across_tokens_is_caught_and_never_leaks(server):
    _, lm, client = server
    full = greedy(lm, "the cat", 20)
    ids = lm.tokenizer.encode(full)
    two = lm.tokenizer.decode(ids[3:5])  # a stop string spanning two tokens of the continuation
    assert len(two) > 1
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=20, temperature=0, stop=[two])
    assert r.choices[0].text == full[:full.index(two)] and r.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].text for c in client.completions.create(model="tiny", prompt="the cat", max_tokens=20,
                                                                    temperature=0, stop=two, stream=True)]
    assert "".join(pieces) == full[:full.index(two)]


def test_many_streaming_clients_each_get_what_they_get_alone(server):
    _, lm, client = server
    prompts = [f"the {w}" for w in ("cat", "dog", "bird", "mat", "log", "hand", "bush", "sat")] * 8  # 64 clients
    want = {p: greedy(lm, p, 15) for p in set(prompts)}
    got, errors = [None] * len(prompts), []

    def ask(i):
        try:
            s = client.completions.create(model="tiny", prompt=prompts[i], max_tokens=15, temperature=0, stream=True)
            got[i] = "".join(c.choices[0].text for c in s)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and got == [want[p] for p in prompts]


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return response.status_code, body["error"]


@pytest.mark.parametrize("payload,status,says", [
    ("{not json", 400, "JSON"),
    ({"model": "tiny", "prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny", "prompt": "a", "n": 10000}, 400, "n"),
    ({"model": "other", "prompt": "a"}, 404, "does not exist"),
    ({"model": "tiny", "prompt": "the cat " * 200}, 400, "context"),
    ({"model": "tiny", "prompt": [999999]}, 400, "token ids"),
])
def test_bad_requests_get_openais_errors_and_the_server_goes_on(server, payload, status, says):
    url, lm, client = server
    body = payload if isinstance(payload, str) else json.dumps(payload)
    r = httpx.post(f"{url}/v1/completions", content=body, headers={"content-type": "application/json"}, timeout=60)
    code, err = error_of(r)
    assert code == status and says in err["message"] + str(err["param"])
    assert client.completions.create(model="tiny", prompt="a", max_tokens=2, temperature=0).choices[0].text is not None


def test_a_dropped_stream_leaves_the_batch_and_huge_max_tokens_is_capped(server):
    url, lm, client = server
    with httpx.stream("POST", f"{url}/v1/completions", json={"model": "tiny", "prompt": "the", "max_tokens": 10_000,
                                                             "stream": True, "temperature": 1.0}, timeout=60) as r:
        next(r.iter_lines())  # one event, then the client goes away
    sched = lmforge_app_scheduler(url)
    end = time.monotonic() + 30
    while sched() and time.monotonic() < end:
        time.sleep(0.05)
    assert sched() == 0
    r = client.completions.create(model="tiny", prompt="the", max_tokens=10_000, temperature=0)
    assert r.usage.completion_tokens <= lm.config.context_length - r.usage.prompt_tokens


def lmforge_app_scheduler(url):
    return lambda: httpx.get(f"{url}/health", timeout=30).json()["batch"]


def test_api_key_and_a_full_queue(run):
    lm = lmforge.load(run)
    url, stop = serving(lm, max_batch=1, max_queue=1, api_key="sesame")
    try:
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0, timeout=60)
        outcomes = []

        def ask():  # 24 at once, one decoding and one waiting at a time: the others are refused
            try:
                r = client.completions.create(model="tiny", prompt="the", max_tokens=60, temperature=1.0)
                outcomes.append(r.usage.completion_tokens)
            except openai.RateLimitError as e:
                outcomes.append(e.status_code)
        threads = [threading.Thread(target=ask) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert 429 in outcomes and any(x != 429 for x in outcomes) and len(outcomes) == 24
        assert client.completions.create(model="tiny", prompt="a", max_tokens=2).usage.completion_tokens >= 1
    finally:
        stop()


def test_metrics_count_requests_tokens_and_latencies(server):
    url, _, client = server
    before = httpx.get(f"{url}/metrics", timeout=30).text
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=5, temperature=0)
    text = httpx.get(f"{url}/metrics", timeout=30).text

    def value(name, body):
        line = next((x for x in body.splitlines() if x.startswith(name + " ") or x.startswith(name + "{")), None)
        return 0.0 if line is None else float(line.rsplit(" ", 1)[1])
    assert value("lmforge_generated_tokens_total", text) - value("lmforge_generated_tokens_total", before) == 5
    assert value("lmforge_prompt_tokens_total", text) - value("lmforge_prompt_tokens_total", before) == \
        r.usage.prompt_tokens
    assert value("lmforge_time_to_first_token_seconds_count", text) >= 1
    assert value("lmforge_inter_token_seconds_count", text) >= 4
    assert 'lmforge_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert "lmforge_queue_length 0.0" in text and "lmforge_batch_size" in text


def test_logprobs_are_the_models_and_rank_the_chosen_token_first_when_greedy(server):
    _, lm, client = server
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        # greedy: the chosen token is the likeliest (top holds 3, fewer where two tokens read alike, e.g. byte pieces)
        assert 1 <= len(top) <= 3 and max(top.values()) == pytest.approx(value) and value <= 0
    ids = lm.encode_prompt("the cat")
    with torch.no_grad():
        first = torch.log_softmax(lm.model(torch.tensor([ids]))[0, -1].float(), -1).max().item()
    assert lp.token_logprobs[0] == pytest.approx(first, abs=1e-4)
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "the dog"}],
                                          max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert "".join(c.token for c in content) == chat.choices[0].message.content
    assert all(len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob == pytest.approx(c.logprob) for c in content)
    plain = client.completions.create(model="tiny", prompt="the cat", max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


def test_the_serve_command_listens_answers_and_stops(run):
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", str(run), "--port", str(port), "--name", "mine"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["model"] == "mine":
                    break
            except httpx.HTTPError:
                assert time.monotonic() < end, "lmforge serve did not start listening"
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
        assert client.completions.create(model="mine", prompt="the", max_tokens=3).usage.completion_tokens >= 1
    finally:
        proc.terminate()  # SIGTERM: HTTP and decoding stop cleanly
        proc.wait(30)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr.read()


def test_serve_refuses_an_encoder_decoder_in_one_sentence(tmp_path, capsys):
    from lmforge.cli import main

    tok = train_bpe(TEXT, 300)
    cfg = model_config_from_preset("t5-mini", vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=2, d_ff=64)
    save_checkpoint(tmp_path / "t5", build_model(cfg), tok)
    assert main(["serve", str(tmp_path / "t5")]) == 2
    assert "decoder-only" in capsys.readouterr().err


def test_a_stream_carries_each_pieces_logprobs_with_it(server):
    _, _, client = server
    ask = dict(model="tiny", messages=[{"role": "user", "content": "the bird"}], max_tokens=10, temperature=0,
               logprobs=True, top_logprobs=2, stop=["the"])
    whole = client.chat.completions.create(**ask).choices[0]
    chunks = [c.choices[0] for c in client.chat.completions.create(**ask, stream=True) if c.choices]
    streamed = [e for c in chunks if c.logprobs is not None for e in c.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole.logprobs.content]
    text, tokens = "", ""
    for c in chunks:  # each piece arrives with the fewest tokens whose text reaches it
        text += c.delta.content or ""
        tokens += "".join(e.token for e in c.logprobs.content) if c.logprobs else ""
        assert tokens.startswith(text) and len(tokens) - len(text) < max((len(e.token) for e in streamed), default=1)
    assert text == whole.message.content
    text = client.completions.create(model="tiny", prompt="the cat", max_tokens=6, temperature=0, logprobs=1,
                                     stream=True)
    tokens = [t for c in text if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert len(tokens) == 6
