"""The command line: each bad input ends in one line on stderr, exit status 2, no traceback, and
nothing half-written; the good paths print figures as text or as one JSON object."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmforge
from lmforge.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmforge: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_train_json_and_eval_and_generate(trained_run, capsys):
    code, out, _ = run(capsys, "eval", str(trained_run), "--json")
    r = json.loads(out)
    assert code == 0 and r["tokens"] > 1000 and r["perplexity"] > 1 and r["bits_per_byte"] > 0
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--seed", "3", "--max-new-tokens", "40", "--json")
    a = json.loads(out)["samples"][0]
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--seed", "3", "--max-new-tokens", "40", "--json")
    assert code == 0 and json.loads(out)["samples"][0] == a and 0 < len(a) <= 40  # char-level: one character a token


def test_eval_on_a_file(trained_run, tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("First Citizen:\nWe are accounted poor citizens.\n" * 20)
    code, out, _ = run(capsys, "eval", str(trained_run), "--file", str(f), "--json")
    assert code == 0 and json.loads(out)["source"] == str(f)


def test_python_front_door(trained_run):
    lm = lmforge.load(trained_run)
    assert lm.tokenizer.vocab_size == lm.model.config.vocab_size
    text = lm.generate("ROMEO:", max_new_tokens=20, temperature=0.8, seed=1)
    assert isinstance(text, str) and 0 < len(text) <= 20
    assert lm.generate("ROMEO:", max_new_tokens=20, temperature=0) == lm.generate("ROMEO:", max_new_tokens=20, temperature=0)


def test_prompt_longer_than_context(trained_run, capsys):
    code, _, err = run(capsys, "generate", str(trained_run), "x" * 100)
    assert_clear_error(code, err, "longer than the model's context of 32")


def test_not_a_checkpoint(tmp_path, capsys):
    assert_clear_error(*run(capsys, "generate", str(tmp_path), "hi")[::2], "not an lmforge checkpoint")
    assert_clear_error(*run(capsys, "eval", str(tmp_path / "nope"))[::2], "does not exist")


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_weights(trained_run, tmp_path, capsys, damage):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(trained_run, run_dir)
    w = run_dir / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64 + data[64:])
    code, _, err = run(capsys, "generate", str(run_dir), "hi")
    assert_clear_error(code, err, "model.safetensors", "corrupted")


def test_bad_corpora(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café crème".encode("latin-1"))
    cases = [
        (str(tmp_path / "missing.txt"), "no such file"),
        (str(empty), "empty"),
        (str(binary), "binary"),
        (str(latin), "UTF-8"),
        ("no-such-corpus", "unknown corpus"),
    ]
    for spec, words in cases:
        assert_clear_error(*run(capsys, "data", "prepare", spec)[::2], words)


def test_no_network_when_a_corpus_must_be_fetched(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("LMFORGE_OFFLINE", "1")
    assert_clear_error(*run(capsys, "quickstart")[::2], "could not download corpus 'shakespeare'")


def test_bad_recipe_values_leave_nothing_behind(small_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    for sets, words in [
        (["model.preset=gpt5"], "unknown model preset 'gpt5'"),
        (["train.foo=1"], "unknown recipe key train.foo"),
        (["data.tokenizer=bpe", "data.vocab_size=100"], "too small"),
    ]:
        args = ["train", "--recipe", "quickstart", "--out", str(out), "--set", f"data.corpus={small_corpus}"]
        for s in sets:
            args += ["--set", s]
        assert_clear_error(*run(capsys, *args)[::2], words)
        assert not (out / "model.safetensors").exists()


def test_resume_and_overwrite_guards(trained_run, tmp_path, capsys):
    assert_clear_error(*run(capsys, "train", "--out", str(tmp_path / "x"), "--resume")[::2], "no checkpoint to resume")
    assert_clear_error(*run(capsys, "train", "--recipe", "shakespeare-char", "--out", str(trained_run))[::2],
                       "already holds a checkpoint")
    for change in ("model.d_model=96", "data.vocab_size=300"):  # refused before anything is loaded or written
        assert_clear_error(*run(capsys, "train", "--out", str(trained_run), "--resume", "--set", change)[::2],
                           f"--set {change} would change the model or its data", "only train.*")


def test_subprocess_error_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "lmforge.cli", "generate", str(tmp_path), "hi"],
                       capture_output=True, text=True, env=os.environ.copy())
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_every_command_has_help(capsys):
    for cmd in (["quickstart"], ["data", "list"], ["data", "prepare"], ["tokenizer", "train"], ["train"],
                ["eval"], ["generate"], ["chat"], ["export"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        assert "usage: lmforge" in capsys.readouterr().out


def test_tokenizer_train_and_data_list(small_corpus, tmp_path, capsys):
    code, out, _ = run(capsys, "tokenizer", "train", str(small_corpus), "--vocab-size", "400",
                       "--out", str(tmp_path / "tok"), "--json")
    r = json.loads(out)
    assert code == 0 and r["vocab_size"] == 400 and (tmp_path / "tok" / "tokenizer.json").is_file()
    code, out, _ = run(capsys, "data", "list", "--json")
    names = {c["name"] for c in json.loads(out)["corpora"]}
    assert {"shakespeare", "peoples-daily", "chinese-reviews"} <= names


def test_quickstart_on_a_small_local_corpus(small_corpus, tmp_path, capsys):
    code, out, _ = run(capsys, "quickstart", "--corpus", str(small_corpus), "--out", str(tmp_path / "qs"), "--json",
                       "--set", "train.max_steps=80", "--set", "data.vocab_size=512", "--set", "model.n_layer=2",
                       "--set", "model.d_model=64", "--set", "model.n_head=2", "--set", "train.eval_every=80")
    r = json.loads(out)
    assert code == 0
    assert r["trained"]["perplexity"] < r["untrained"]["perplexity"] / 3
    assert r["bigram"]["perplexity"] < r["untrained"]["perplexity"]
    assert len(r["samples"]) == 3 and all(s["text"] for s in r["samples"])
    assert r["dtype"] in ("float32", "bfloat16") and "bfloat16 as in float32" in r["dtype_reason"]  # the probe's say
    assert lmforge.load(tmp_path / "qs").generate("The", max_new_tokens=5)


def test_stream_gives_the_same_text_as_generate(trained_run, capsys):
    lm = lmforge.load(trained_run)
    pieces = list(lm.stream("ROMEO:", max_new_tokens=30, seed=5))
    assert len(pieces) > 1 and "".join(pieces) == lm.generate("ROMEO:", max_new_tokens=30, seed=5)
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--stream", "--seed", "5", "--max-new-tokens", "30")
    assert code == 0 and out == "ROMEO:" + "".join(pieces) + "\n"


def test_streamed_samples_are_the_samples_generate_gives(trained_run, capsys):
    lm = lmforge.load(trained_run)
    want = lm.generate("ROMEO:", max_new_tokens=25, seed=7, num_samples=3, stop="\n\n")
    steps = list(lm.stream("ROMEO:", max_new_tokens=25, seed=7, num_samples=3, stop="\n\n"))
    assert all(isinstance(s, list) and len(s) == 3 for s in steps) and len(set(want)) > 1
    assert ["".join(s[i] for s in steps) for i in range(3)] == want  # one shared prefill, as in generate
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--stream", "--seed", "7", "--max-new-tokens",
                       "25", "--num-samples", "3", "--stop", "\n\n")
    assert code == 0 and out == "\n\n".join("ROMEO:" + w for w in want) + "\n"


def test_stream_holds_back_incomplete_characters():
    import torch

    from lmforge.api import LM
    from lmforge.config import ModelConfig
    from lmforge.tokenizer import train_bpe

    tok = train_bpe(["abc"], vocab_size=263)  # bytes only: a Chinese character is three tokens
    script = tok.encode("民主a")  # 3 + 3 + 1 byte tokens
    prompt = tok.encode("人")

    class Scripted(torch.nn.Module):
        """Emits `script` in order, whatever it is given."""

        config = ModelConfig(vocab_size=tok.vocab_size, context_length=32, n_layer=1, n_head=1, d_model=8)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids, start_pos=0, cache=None, attention_mask=None):
            n = start_pos + ids.size(1) - len(prompt)  # tokens generated so far
            logits = torch.zeros(ids.size(0), ids.size(1), tok.vocab_size)
            logits[:, -1, script[min(max(n, 0), len(script) - 1)]] = 10.0
            return logits

    pieces = list(LM(Scripted(), tok).stream("人", max_new_tokens=len(script), temperature=0, stop_at_eos=False))
    assert pieces == ["民", "主", "a"]


def test_a_run_finds_its_corpus_from_any_directory_and_quickstart_names_its_folder(tmp_path, monkeypatch, capsys):
    from lmforge.cli import quickstart_dir
    from lmforge.config import load_recipe

    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "mine.txt").write_text("ab " * 50)
    monkeypatch.chdir(tmp_path)
    for given in ("texts/mine.txt", "texts", "texts/*.txt"):  # relative: stored absolute in the run's recipe
        corpus = load_recipe("quickstart", [f"data.corpus={given}"]).data.corpus
        assert Path(corpus).is_absolute() and corpus.endswith(given.lstrip("./")), corpus
    assert load_recipe("quickstart", ["data.corpus=peoples-daily"]).data.corpus == "peoples-daily"
    assert [quickstart_dir(c) for c in ("shakespeare", "peoples-daily", "/data/zh.txt", "my texts/", "a/**/*.txt")] \
        == ["runs/quickstart", "runs/quickstart-peoples-daily", "runs/quickstart-zh", "runs/quickstart-my-texts",
            "runs/quickstart-a"]
    code, out, err = run(capsys, "data", "prepare", "texts/mine.txt", "--tokenizer", "wordpiece", "--vocab-size",
                         "300", "--json")
    assert code == 0 and json.loads(out)["corpus"] == "texts/mine.txt", err


def test_eval_file_is_cleaned_as_training_text_was_and_bad_weights_or_runs_are_refused(trained_run, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    from lmforge.cli import _finite

    wide, narrow = tmp_path / "wide.txt", tmp_path / "narrow.txt"
    wide.write_text("ＲＯＭＥＯ： Ｏ， ｓｐｅａｋ ａｇａｉｎ． " * 20)  # full width: NFKC makes it the narrow text
    narrow.write_text("ROMEO: O, speak again. " * 20)
    scores = [json.loads(run(capsys, "eval", str(trained_run), "--file", str(f), "--json")[1])["loss"]
              for f in (wide, narrow)]
    assert scores[0] == pytest.approx(scores[1])
    assert_clear_error(*run(capsys, "eval", str(trained_run), "--batch-size", "0")[::2], "--batch-size must be 1")
    assert _finite({"a": [float("nan"), 1.0], "b": float("inf"), "c": "x"}) == {"a": [None, 1.0], "b": None, "c": "x"}
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(trained_run, broken)
    weights = load_file(str(broken / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(broken / "model.safetensors"))
    assert_clear_error(*run(capsys, "eval", str(broken), "--json")[::2], "not finite numbers")
    from lmforge.config import ModelConfig
    from lmforge.models import build_model
    from lmforge.checkpoint import save_checkpoint

    tok = lmforge.load(trained_run).tokenizer
    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=16, n_layer=1, n_head=2, d_model=16, head="classify",
                      labels=["a", "b"])
    save_checkpoint(tmp_path / "classifier", build_model(cfg), tok)
    assert_clear_error(*run(capsys, "eval", str(tmp_path / "classifier"))[::2], "fine-tuned for 'classify'",
                       "lmforge predict")


def test_tokenizer_out_in_a_new_folder_or_under_a_file_and_a_torn_metrics_line(tmp_path, capsys):
    from lmforge.train.logging import MetricsLog

    text = tmp_path / "t.txt"
    text.write_text("some words to learn from " * 30)
    code, out, err = run(capsys, "tokenizer", "train", str(text), "--kind", "char", "--out",
                         str(tmp_path / "new" / "deeper" / "tok.json"))
    assert code == 0 and (tmp_path / "new" / "deeper" / "tok.json").is_file(), err
    assert_clear_error(*run(capsys, "tokenizer", "train", str(text), "--kind", "char", "--out",
                            str(text / "tok.json"))[::2], "cannot write")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # killed mid-line
    log = MetricsLog(tmp_path / "run", resume_step=5)
    assert log.read() == [{"step": 1, "loss": 2.0}]
