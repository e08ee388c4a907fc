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
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--top-p", "0")[::2], "--top-p must be in (0, 1]")
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--beams", "2", "--stream")[::2], "cannot stream")
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--beams", "2", "--num-samples", "3")[::2],
                       "--num-samples cannot exceed the number of beams")


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


def test_cli_refuses_bad_values_and_text_before_printing_anything(trained_run, capsys):
    run_dir = str(trained_run)
    for flags, words in [(["--temperature", "inf"], "--temperature must be a finite number"),
                         (["--beams", "3", "--length-penalty", "nan"], "--length-penalty must be a finite number"),
                         (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
                         (["--num-samples", "0", "--stream"], "--num-samples must be 1 or more"),
                         (["--stop", ""], "stop string must be non-empty")]:
        assert_clear_error(*run(capsys, "generate", run_dir, "x", *flags)[::2], words)
    code, out, err = run(capsys, "generate", run_dir, "x" * 40, "--stream")  # context 32: nothing is printed first
    assert_clear_error(code, err, "longer than the model's context")
    assert out == ""
    code, out, err = run(capsys, "generate", run_dir, "ab\udcff", "--stream")  # sys.argv's form of a byte not UTF-8
    assert_clear_error(code, err, "not valid UTF-8")
    assert out == ""
    lm = lmforge.load(trained_run)
    with pytest.raises(lmforge.LmforgeError, match="max_new_tokens must be a whole number"):
        lm.generate("x", max_new_tokens=2.5)
    with pytest.raises(lmforge.LmforgeError, match="stream takes one prompt"):
        next(lm.stream(["a", "b"]))


def test_cli_stop_reads_backslash_escapes_and_beams_can_run_to_the_end(trained_run, capsys):
    from lmforge.cli import _escaped

    assert _escaped(r"\n\n") == "\n\n" and _escaped(r"a\tb\\n") == "a\tb\\n" and _escaped(r"\q") == r"\q"
    lm = lmforge.load(trained_run)
    full = lm.generate("ROMEO:", max_new_tokens=60, temperature=0)
    assert "\n" in full
    code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--max-new-tokens", "60", "--temperature", "0",
                       "--stop", r"\n", "--json")
    assert code == 0 and json.loads(out)["samples"][0] == full[:full.index("\n")]
    for flag in ("--early-stopping", "--no-early-stopping"):
        code, out, _ = run(capsys, "generate", str(trained_run), "ROMEO:", "--beams", "3", "--max-new-tokens", "8",
                           flag, "--json")
        assert code == 0 and len(json.loads(out)["samples"]) == 1


def test_cli_output_into_a_closed_pipe_ends_quietly(trained_run):
    import subprocess
    import sys

    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    writer = subprocess.run([sys.executable, "-m", "lmforge.cli", "generate", str(trained_run), "ROMEO:", "--stream",
                             "--max-new-tokens", "400", "--num-samples", "8", "--temperature", "1"],
                            stdout=reader.stdin, stderr=subprocess.PIPE, text=True, timeout=300)
    reader.stdin.close()
    reader.wait()
    assert "Traceback" not in writer.stderr and "BrokenPipe" not in writer.stderr, writer.stderr


def test_chat_refuses_a_bad_setup_before_the_loop_and_survives_bytes_that_are_not_utf8(trained_run, capsys,
                                                                                        monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert_clear_error(*run(capsys, "chat", str(trained_run), "--top-p", "2")[::2], "--top-p must be in (0, 1]")
    assert_clear_error(*run(capsys, "chat", str(trained_run), "--system", "x" * 40)[::2], "system text")
    monkeypatch.setattr("sys.stdin", io.StringIO("ab\udcff\nhi\n"))  # stdin's form of a line that is not UTF-8
    code = main(["chat", str(trained_run), "--max-new-tokens", "4", "--temperature", "0"])
    out, err = capsys.readouterr()
    assert code == 0 and out.count("model> ") == 2 and "not valid UTF-8" in err and "Traceback" not in err


def test_beams_end_at_stop_strings_so_the_samples_differ_before_them(trained_run):
    lm = lmforge.load(trained_run)
    outs = lm.generate("ROMEO:", num_beams=4, num_samples=4, stop="e", max_new_tokens=30)
    assert len(set(outs)) == 4 and not any("e" in o for o in outs), outs  # not one text cut four times


def test_the_python_front_door_takes_prompts_in_every_usual_form_and_refuses_the_rest(trained_run):
    import numpy as np
    import torch

    lm = lmforge.load(trained_run)
    ids = lm.tokenizer.encode("ROMEO:")
    want = lm.generate(ids, max_new_tokens=5, temperature=0)
    for same in (tuple(ids), torch.tensor(ids), np.array(ids), [np.int64(i) for i in ids]):
        assert lm.generate(same, max_new_tokens=5, temperature=0) == want
    assert lm.generate(torch.tensor([ids, ids]), max_new_tokens=5, temperature=0) == [want, want]
    for bad in (5, None, b"abc", [True, 6], [], ["a", 5]):
        with pytest.raises(lmforge.LmforgeError, match="a prompt is text, a list of token ids"):
            lm.generate(bad, max_new_tokens=2)
    for kw, words in [(dict(temperature=None), "temperature must be given"), (dict(seed="1"), "seed must be"),
                      (dict(seed=2**70), "seed must be"), (dict(stop=5), "stop is text"),
                      (dict(early_stopping="never", num_beams=2), "early_stopping must be True or False"),
                      (dict(stop_ids=[10**6]), "stop_ids must be token ids")]:
        with pytest.raises(lmforge.LmforgeError, match=words):
            lm.generate("x", max_new_tokens=2, **kw)
    with pytest.raises(lmforge.LmforgeError, match="a prompt is text"):
        next(lm.stream(5))


def test_cli_says_when_a_flag_has_no_effect(trained_run, capsys):
    code, _, err = run(capsys, "generate", str(trained_run), "ROMEO:", "--beams", "2", "--temperature", "0.5",
                       "--top-k", "3", "--max-new-tokens", "4", "--seed", "1")
    assert code == 0 and "note: --temperature and --top-k have no effect with --beams" in err
    code, _, err = run(capsys, "generate", str(trained_run), "ROMEO:", "--length-penalty", "2", "--max-new-tokens", "4")
    assert code == 0 and "note: --length-penalty has no effect without --beams" in err
    code, _, err = run(capsys, "generate", str(trained_run), "ROMEO:", "--beams", "2", "--length-penalty", "2",
                       "--no-early-stopping", "--max-new-tokens", "4")
    assert code == 0 and "note" not in err


def test_chat_shows_the_reply_as_it_keeps_it_and_each_error_on_its_own_line(trained_run, capsys, monkeypatch):
    lm, raw = lmforge.load(trained_run), []
    for seed in range(6):
        chat = Chat(lm, max_new_tokens=8, sampling=dict(temperature=1.0, seed=seed))
        for message in ("hi", "yo"):
            chat.reset()
            raw.append("".join(lm.stream(chat.prompt(message), 8, stop=chat.template.stops, temperature=1.0, seed=seed)))
            shown = "".join(chat.send(message))
            assert shown == chat.turns[-1][1] == raw[-1].strip(), shown  # no leading or trailing whitespace shown
    assert any(r != r.strip() for r in raw)  # the model's own replies had some
    monkeypatch.setattr("sys.stdin", io.StringIO("x" * 40 + "\n" + "y" * 40 + "\n"))
    assert main(["chat", str(trained_run), "--max-new-tokens", "4", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 2 and all(line.startswith("lmforge: error:") for line in errors), err
    assert out.count("model> \n") == 2


def test_a_prompt_that_starts_with_a_dash_goes_after_double_dash_as_the_help_says(trained_run, capsys):
    code, out, _ = run(capsys, "generate", "--max-new-tokens", "3", "--temperature", "0", str(trained_run), "--", "-ROMEO")
    assert code == 0 and out.startswith("-ROMEO")


def test_ctrl_c_stops_a_chat_reply_not_the_chat_and_keeps_what_was_shown(trained_run, capsys, monkeypatch):
    from lmforge.api import LM

    stream, calls = LM.stream, []

    def interrupted_once(self, *args, **kwargs):
        calls.append(1)
        for i, piece in enumerate(stream(self, *args, **kwargs)):
            if len(calls) == 1 and i == 2:
                raise KeyboardInterrupt  # the user presses Ctrl-C while the first reply is being written
            yield piece

    monkeypatch.setattr(LM, "stream", interrupted_once)
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\nyo\n"))
    code = main(["chat", str(trained_run), "--max-new-tokens", "8", "--temperature", "0"])
    out, err = capsys.readouterr()
    assert code == 0 and out.count("model> ") == 2 and "reply stopped" in err and len(calls) == 2
    chat = Chat(lmforge.load(trained_run), max_new_tokens=30, sampling=dict(temperature=0))
    shown, reply = "", chat.send("hi")
    for piece in reply:
        shown += piece
        if shown.strip():
            break
    reply.close()  # what the chat loop does on Ctrl-C
    assert chat.turns == [("user", "hi"), ("assistant", shown.strip())]


def test_generate_refuses_a_bad_stop_before_printing_and_notes_stream_with_json(trained_run, capsys, monkeypatch):
    from lmforge.api import LM

    code, out, err = run(capsys, "generate", str(trained_run), "ROMEO:", "--stream", "--stop=")
    assert_clear_error(code, err, "stop string must be non-empty")
    assert out == ""
    code, out, err = run(capsys, "generate", str(trained_run), "ROMEO:", "--stream", "--json", "--max-new-tokens", "3")
    assert code == 0 and json.loads(out)["samples"] and "--stream has no effect with --json" in err
    lm = lmforge.load(trained_run)
    assert lm.generate("ROMEO:", max_new_tokens=3, stop_ids=5, temperature=0) == \
        lm.generate("ROMEO:", max_new_tokens=3, stop_ids=[5], temperature=0)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LM, "generate", interrupt)
    code, out, err = run(capsys, "generate", str(trained_run), "ROMEO:")
    assert code == 130 and err.strip() == "lmforge: interrupted"  # no word of checkpoints: generate writes none
