"""Generation through the front doors: lists of prompts, samples, beams, stop strings, streaming,
and the chat loop, in Python and on the command line."""

import io
import json

import pytest

import lmforge
from lmforge.api import cut_at_stop, hold_back
from lmforge.chat import Chat, ChatTemplate
from lmforge.cli import main
from tests.test_cli import assert_clear_error, run


def test_stop_string_helpers():
    assert cut_at_stop("abc\nUser: hi", ["\nUser:"]) == ("abc", True)
    assert cut_at_stop("abc", ["x", ""]) == ("abc", False)
    assert cut_at_stop("a.b!c", ["!", "."]) == ("a", True)  # the earliest stop wins
    assert hold_back("hello\nUs", ["\nUser:"]) == "hello"  # may become the stop string: wait
    assert hold_back("hello\nUx", ["\nUser:"]) == "hello\nUx"
    assert hold_back("ab\ufffd", []) == "ab"  # an incomplete character waits for its other bytes


def test_a_list_of_prompts_is_one_batch_with_the_same_answers(trained_run):
    lm = lmforge.load(trained_run)
    prompts = ["ROMEO:", "O", "What say you, my lord"]
    batch = lm.generate(prompts, max_new_tokens=25, temperature=0)  # (padding is exact: tests/test_engine.py)
    assert len(batch) == 3 and all(isinstance(t, str) and t for t in batch)
    assert lm.generate(prompts[:1], max_new_tokens=25, temperature=0) == [lm.generate(prompts[0], 25, temperature=0)]
    samples = lm.generate(prompts[:2], max_new_tokens=10, num_samples=3, seed=0)
    assert len(samples) == 2 and all(len(s) == 3 and all(isinstance(t, str) for t in s) for s in samples)
    beams = lm.generate("ROMEO:", max_new_tokens=10, num_beams=4, num_samples=2)
    assert len(beams) == 2 and beams[0] != beams[1]


def test_stop_strings_end_the_text_in_generate_and_stream(trained_run):
    lm = lmforge.load(trained_run)
    full = lm.generate("ROMEO:", max_new_tokens=30, temperature=0)
    stop = full[10:12]
    cut = full[:full.index(stop)]
    assert lm.generate("ROMEO:", max_new_tokens=30, temperature=0, stop=stop) == cut
    assert "".join(lm.stream("ROMEO:", max_new_tokens=30, temperature=0, stop=[stop, "\x00"])) == cut
    assert lm.generate("ROMEO:", max_new_tokens=30, temperature=0, stop=stop, num_beams=2).find(stop) == -1
    with pytest.raises(lmforge.LmforgeError, match="unknown generation option 'top_q'"):
        lm.generate("x", top_q=0.5)


def test_cli_generate_with_beams_samples_and_filters(trained_run, capsys):
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--beams", "3", "--num-samples", "2",
                       "--max-new-tokens", "12", "--json")
    assert code == 0 and len(json.loads(out)["samples"]) == 2
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--num-samples", "3", "--min-p", "0.05",
                       "--repetition-penalty", "1.2", "--no-repeat-ngram-size", "3", "--seed", "1", "--json")
    assert code == 0 and len(json.loads(out)["samples"]) == 3
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--temperature", "0", "--stop", "e", "--json")
    assert code == 0 and "e" not in json.loads(out)["samples"][0]


def test_cli_generate_bad_settings(trained_run, capsys):
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--top-p", "0")[::2], "top_p")
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--beams", "2", "--stream")[::2], "cannot stream")
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--beams", "2", "--num-samples", "3")[::2],
                       "num_samples")


def test_chat_template_and_context_trimming(trained_run):
    t = ChatTemplate()
    text = t.render([("user", "hi"), ("assistant", "hello"), ("user", "how are you?")], system="Be brief.")
    assert text == "Be brief.\n\nUser: hi\nAssistant: hello\nUser: how are you?\nAssistant:"
    chat = Chat(lmforge.load(trained_run), max_new_tokens=8, sampling=dict(temperature=0),  # context 32, char-level
                template=ChatTemplate("U:", "A:"))  # 32 - 8 = 24 characters for the prompt
    chat.turns = [("user", "aaaa"), ("assistant", "bbbb"), ("user", "c"), ("assistant", "d")]
    assert chat.prompt("e") == "U: c\nA: d\nU: e\nA:"  # the oldest exchange is left out
    list(chat.send("e"))
    assert chat.turns[-2] == ("user", "e") and chat.turns[-1][0] == "assistant"
    with pytest.raises(lmforge.LmforgeError, match="does not fit"):
        chat.prompt("x" * 40)


def test_cli_chat_loop(trained_run, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n" + "x" * 40 + "\n/reset\nyo\n"))
    code = main(["chat", str(trained_run), "--max-new-tokens", "6", "--temperature", "0"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.count("model> ") == 3
    assert "does not fit" in err  # the over-long message is refused and the loop goes on


def test_token_id_prompts_are_taken_as_they_are(trained_run):
    lm = lmforge.load(trained_run)
    ids = lm.tokenizer.encode("ROMEO:")
    assert "".join(lm.stream(ids, max_new_tokens=10, temperature=0)) == lm.generate("ROMEO:", max_new_tokens=10,
                                                                                      temperature=0)
    with pytest.raises(lmforge.LmforgeError, match="outside the vocabulary"):
        next(lm.stream([lm.config.vocab_size]))
    assert lm.generate(ids, max_new_tokens=10, temperature=0) == lm.generate("ROMEO:", max_new_tokens=10, temperature=0)
    assert lm.generate([ids, "ROMEO:"], max_new_tokens=5, temperature=0)[0] == lm.generate(ids, max_new_tokens=5,
                                                                                            temperature=0)
