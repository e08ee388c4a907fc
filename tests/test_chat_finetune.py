"""Chat fine-tuning (tasks/chat.py, train/chat.py): the template and its assistant-only labels by hand, a
run that learns the assistant's turns, the files a chat model carries, LoRA on it, and bad input."""

import json
import random

import pytest
import torch

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.cli import main
from lmforge.config import model_config_from_preset
from lmforge.data import IGNORE
from lmforge.models import build_model
from lmforge.tasks.chat import CHAT_TEMPLATE, ROLE_TOKENS, assistant_spans, encode_conversation
from lmforge.tokenizer import train_bpe

COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red", "sun": "yellow"}
CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What colour is snow?"},
        {"role": "assistant", "content": "Snow is white."}, {"role": "user", "content": "And coal?"},
        {"role": "assistant", "content": "Coal is black."}]


def conversations(n=240, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        thing = rng.choice(list(COLOURS))
        out.append({"messages": [{"role": "user", "content": f"what colour is the {thing}?"},
                                 {"role": "assistant", "content": f"the {thing} is {COLOURS[thing]}."}]})
    return out


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """A tiny untrained GPT with a BPE tokenizer, saved as a run."""
    texts = [m["content"] for c in conversations() for m in c["messages"]] * 3
    tok = train_bpe(texts, 300)
    torch.manual_seed(0)
    cfg = model_config_from_preset("gpt-small", vocab_size=tok.vocab_size, context_length=48, n_layer=2, n_head=2,
                                   d_model=64, d_ff=128, dropout=0.0)
    out = tmp_path_factory.mktemp("gpt")
    save_checkpoint(out, build_model(cfg), tok)
    return out


def test_the_template_renders_turns_and_finds_the_assistants_spans():
    text, spans = assistant_spans(CHAT_TEMPLATE, CONV)
    assert text == ("<|system|>\nBe brief.<|end|>\n<|user|>\nWhat colour is snow?<|end|>\n<|assistant|>\n"
                    "Snow is white.<|end|>\n<|user|>\nAnd coal?<|end|>\n<|assistant|>\nCoal is black.<|end|>\n")
    assert [text[a:b] for a, b in spans] == ["Snow is white.<|end|>\n", "Coal is black.<|end|>\n"]


def test_the_users_words_never_carry_loss(gpt_run):
    _, tok = load_checkpoint(gpt_run)
    tok.hf.add_special_tokens(list(ROLE_TOKENS))
    ids, labels = encode_conversation(CHAT_TEMPLATE, tok, CONV)
    learned = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE], skip_special_tokens=False)
    assert learned == "Snow is white.<|end|>\nCoal is black.<|end|>\n"  # the replies and their end-of-turn
    assert all(lab in (IGNORE, i) for i, lab in zip(ids, labels))
    user = tok.decode([i for i, lab in zip(ids, labels) if lab == IGNORE], skip_special_tokens=False)
    assert "What colour is snow?" in user and "And coal?" in user and "white" not in user


def finetune_chat(gpt_run, out, data, *flags, epochs="8"):
    return main(["finetune", str(gpt_run), "--task", "chat", "--data", str(data), "--out", str(out), "--epochs", epochs,
                 "--batch-size", "16", "--lr", "3e-3", "--set", "train.dtype=float32", "--json", *flags])


@pytest.fixture(scope="module")
def chat_run(gpt_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat")
    data = tmp / "chats.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in conversations()), encoding="utf-8")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert finetune_chat(gpt_run, tmp / "run", data, epochs="20") == 0
    return tmp / "run", json.loads(out.getvalue())


def test_chat_finetune_learns_the_assistants_turns_and_writes_a_chat_model(chat_run):
    run, report = chat_run
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"lr"' in x]
    assert losses[-1] < 0.3 * losses[0] and report["test"]["perplexity"] < 3
    for x in report["samples"]:  # each reply in the assistant's shape, with the colour the question asks for
        thing = next(t for t in COLOURS if f"the {t}?" in x["user"])
        assert x["reply"].startswith("the ") and x["reply"].endswith(f" is {COLOURS[thing]}."), report["samples"]
    assert len(report["samples"]) == 3
    config = json.loads((run / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE and config["eos_token"] == "<|end|>"
    model, tok = load_checkpoint(run)
    assert model.config.vocab_size == tok.vocab_size and all(tok.hf.token_to_id(t) is not None for t in ROLE_TOKENS)
    end = tok.hf.token_to_id("<|end|>")
    assert end in json.loads((run / "generation_config.json").read_text())["eos_token_id"]


def test_lora_chat_saves_the_adapter_and_the_grown_embeddings(gpt_run, tmp_path, capsys):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in conversations()), encoding="utf-8")
    assert finetune_chat(gpt_run, tmp_path / "run", data, "--lora-rank", "8", "--lr", "1e-2") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lora"]["fraction"] < 1 and not (tmp_path / "run" / "model.safetensors").exists()
    model, tok = load_checkpoint(tmp_path / "run")  # the base grows its vocabulary, then takes the adapter
    assert model.config.vocab_size == tok.vocab_size
    assert report["test"]["perplexity"] < 5


@pytest.mark.parametrize("line,says", [({"prompt": "hi"}, "neither"), ("nonsense", "not valid JSON")])
def test_bad_chat_data_is_one_sentence_and_writes_nothing(gpt_run, tmp_path, capsys, line, says):
    data = tmp_path / "bad.jsonl"
    data.write_text((line if isinstance(line, str) else json.dumps(line)) + "\n", encoding="utf-8")
    assert finetune_chat(gpt_run, tmp_path / "run", data) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_an_encoder_cannot_be_chat_fine_tuned(tmp_path, capsys):
    tok = train_bpe(["a b c d e f"] * 20, 300)
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=32, n_layer=1,
                                   d_model=32, n_head=2)
    save_checkpoint(tmp_path / "bert", build_model(cfg), tok)
    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in conversations(40)), encoding="utf-8")
    assert finetune_chat(tmp_path / "bert", tmp_path / "run", data) == 2
    assert "decoder-only" in capsys.readouterr().err


def test_lmforge_chat_answers_in_turn_and_stops_at_the_end_of_its_turn(chat_run, capsys, monkeypatch):
    import io

    run, _ = chat_run
    monkeypatch.setattr("sys.stdin", io.StringIO("what colour is the snow?\n/reset\nwhat colour is the sky?\n"))
    assert main(["chat", str(run), "--max-new-tokens", "20", "--temperature", "0"]) == 0
    replies = [line.split("model> ", 1)[1] for line in capsys.readouterr().out.splitlines() if "model> " in line]
    assert len(replies) == 2 and replies[0].endswith("is white.") and replies[1].endswith("is blue."), replies
    import lmforge

    lm = lmforge.load(run)  # the end-of-turn token ends a plain generation too
    assert lm.tokenizer.hf.token_to_id("<|end|>") in lm.end_ids
