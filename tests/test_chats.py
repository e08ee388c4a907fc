"""Conversations for chat fine-tuning (data/chats.py): the two JSON-lines shapes, chitchat's turns, bad input."""

import json
import zipfile

import pytest

from lmforge.data import corpora
from lmforge.data.chats import chitchat_conversations, read_chats
from lmforge.errors import LmforgeError
from tests.test_corpora import _fake_pip

RAW = {  # chitchat's shape: groups of one sender's consecutive messages
    "a": {"messages": [[{"text": "Hello", "sender": "u1"}, {"text": "How are you?", "sender": "u1"}],
                       [{"text": "fine thanks", "sender": "u2"}],
                       [{"text": "Good.", "sender": "u1"}], [{"text": "And you?", "sender": "u1"}]],
          "prompt": "p", "ratings": {}, "start": ""},
    "b": {"messages": [[{"text": "anyone there?", "sender": "u3"}], [{"text": "hello?", "sender": "u3"}]]},
    "c": {"messages": [[{"text": "hi", "sender": "u4"}], [{"text": "  ", "sender": "u5"}]]},
}


def test_chitchat_turns_merge_each_speakers_messages_and_drop_one_sided_chats():
    convs, alone = chitchat_conversations(RAW)
    assert alone == 2  # b: one speaker; c: the other speaker wrote nothing
    assert convs == [[{"role": "user", "content": "Hello\nHow are you?"},
                      {"role": "assistant", "content": "fine thanks"},
                      {"role": "user", "content": "Good.\nAnd you?"}]]


def test_chitchat_is_a_builtin_corpus_from_its_pinned_wheel(tmp_path, monkeypatch):
    wheel = tmp_path / "chitchat_dataset-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("chitchat_dataset/dataset.json", json.dumps(RAW))
        z.writestr("chitchat_dataset/__init__.py", "not wanted")
    _fake_pip(monkeypatch, "chitchat", wheel, wheel.name)
    chats = read_chats("chitchat")
    assert len(chats.conversations) == 1 and chats.stats["one_sided_left_out"] == 2
    text = corpora.load_corpus("chitchat")
    assert text.documents == ["Hello\nHow are you?\nfine thanks\nGood.\nAnd you?"]
    assert "chitchat" in [c["name"] for c in corpora.list_corpora()]


def write(tmp_path, lines, name="c.jsonl"):
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return str(path)


def test_messages_and_prompt_completion_lines(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}]
    chats = read_chats(write(tmp_path, [{"messages": msgs}, "", {"prompt": "2+2?", "completion": "4"}]))
    assert chats.conversations == [msgs, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]]


@pytest.mark.parametrize("line,says", [
    ("{not json", "c.jsonl:1 is not valid JSON"),
    ({"text": "hi"}, "neither"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "message 1 is not a message"),
    ({"messages": [{"role": "user", "content": 3}]}, "message 1 is not a message"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant reply"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "system message after the first"),
])
def test_bad_conversations_are_one_sentence_with_the_line(tmp_path, line, says):
    with pytest.raises(LmforgeError, match=says) as e:
        read_chats(write(tmp_path, [line]))
    assert "\n" not in str(e.value) and "c.jsonl" in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(LmforgeError, match="not a file"):
        read_chats(str(tmp_path / "none.jsonl"))
    with pytest.raises(LmforgeError, match="not a .jsonl file"):
        read_chats(write(tmp_path, ["a"], "c.txt"))
    with pytest.raises(LmforgeError, match="holds no conversation"):
        read_chats(write(tmp_path, [""]))
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(LmforgeError, match="as UTF-8 text"):
        read_chats(str(tmp_path / "latin.jsonl"))
