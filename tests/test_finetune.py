"""Fine-tuning end to end on small made-up tasks, and every bad input a user can give it."""

import json
import random

import pytest
import torch
import yaml

from lmforge.cli import main
from lmforge.config import SHORTHANDS, model_config_from_preset
from lmforge.errors import LmforgeError
from lmforge.io import LOCK_NAME
from lmforge.models import build_model
from lmforge.tokenizer import train_char
from lmforge.checkpoint import save_checkpoint
from lmforge.train.finetune import FinetuneConfig, cross_validate, finetune, settings
from lmforge.train.predict import predict_file

WARM = "sun warm bright summer light day".split()
COLD = "rain cold dark winter snow night".split()


def rows(n=120, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "warm" if i % 2 else "cold"
        words = rng.choices(WARM if label == "warm" else COLD, k=4) + rng.choices(WARM + COLD, k=2)
        rng.shuffle(words)
        out.append((" ".join(words), label))
    return out


def write_csv(path, data, header="text,label"):
    path.write_text(header + "\n" + "".join(f"{t},{lab}\n" for t, lab in data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """An untrained tiny encoder with a character tokenizer, saved as a run."""
    tok = train_char([t for t, _ in rows()] + ["question? answer."])
    torch.manual_seed(0)
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=48, n_layer=2,
                                   d_model=32, n_head=2, dropout=0.0)
    out = tmp_path_factory.mktemp("base")
    save_checkpoint(out, build_model(cfg), tok)
    return out


def quick(**kw):
    return FinetuneConfig(**{**dict(epochs=6, batch_size=16, lr=3e-3, patience=0, progress=False), **kw})


def test_finetune_learns_keeps_the_best_and_reports(base_run, tmp_path):
    data = write_csv(tmp_path / "d.csv", rows())
    report = finetune(base_run, str(data), tmp_path / "run", quick(), log=lambda *a: None)
    assert report["test_rows"] == 12 and report["train_rows"] == 96
    assert report["test"]["accuracy"] >= 0.9 > report["majority_baseline"]["accuracy"]
    run = tmp_path / "run"
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((run / "report.json").read_text())
    assert saved["test"]["accuracy"] == report["test"]["accuracy"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [m["val_accuracy"] for m in metrics if "val_accuracy" in m]
    assert report["best_validation"]["accuracy"] == max(val[1:])  # the kept checkpoint is the best one
    out, rep = predict_file(run, str(data), tmp_path / "pred.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 120 and set(lines[0]["probabilities"]) == {"cold", "warm"}
    assert rep["accuracy"] > 0.85


def test_compiled_finetuning_learns_from_batches_of_every_length(base_run, tmp_path):
    """Rows of different lengths make batches of different shapes: the compiled layers follow them."""
    data = write_csv(tmp_path / "d.csv", rows())
    said = []
    report = finetune(base_run, str(data), tmp_path / "run", quick(compile="true"), log=said.append)
    assert report["test"]["accuracy"] >= 0.9 and not any("compile failed" in s for s in said), said
    with pytest.raises(LmforgeError, match="compile='maybe' is not supported; use auto, true or false"):
        quick(compile="maybe")


def test_a_pair_classifier_predicts_from_both_texts(base_run, tmp_path):
    rng = random.Random(3)
    lines = []
    for _ in range(120):  # the label is the second text's temperature: the first alone says nothing
        a, b = " ".join(rng.choices(WARM + COLD, k=3)), " ".join(rng.choices(WARM if rng.random() < 0.5 else COLD, k=3))
        lines.append(json.dumps({"a": a, "b": b, "label": "warm" if b.split()[0] in WARM else "cold"}))
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = quick(text_column="a", text_pair_column="b", epochs=20)
    report = finetune(base_run, str(data), tmp_path / "run", cfg, log=lambda *a: None)
    out, rep = predict_file(tmp_path / "run", str(data))
    assert len(out.read_text().splitlines()) == 120 and rep["n"] == 120
    assert rep["accuracy"] > 0.85 and report["test"]["accuracy"] > 0.7  # the first text alone would give about half


def test_a_decoder_fine_tunes_for_classification(tmp_path):
    tok = train_char([t for t, _ in rows()])
    torch.manual_seed(0)
    cfg = model_config_from_preset("gpt-micro", vocab_size=tok.vocab_size, context_length=48)
    save_checkpoint(tmp_path / "gpt", build_model(cfg), tok)
    data = write_csv(tmp_path / "d.csv", rows())
    report = finetune(tmp_path / "gpt", str(data), tmp_path / "run", quick(), log=lambda *a: None)
    assert report["test"]["accuracy"] >= 0.9


def test_cross_validation_reports_mean_and_std(base_run, tmp_path):
    data = write_csv(tmp_path / "d.csv", rows(60))
    r = cross_validate(base_run, str(data), tmp_path / "cv", quick(epochs=2), folds=3, log=lambda *a: None)
    assert len(r["values"]["accuracy"]) == 3
    assert r["mean"]["accuracy"] == pytest.approx(sum(r["values"]["accuracy"]) / 3)
    assert (tmp_path / "cv" / "cv.json").is_file()


def test_cross_validation_never_overwrites_an_earlier_one(base_run, tmp_path):
    import shutil

    data = write_csv(tmp_path / "d.csv", rows(60))
    shutil.copytree(base_run, tmp_path / "cv" / "fold-2")  # a fold of an earlier cross-validation, stopped midway
    with pytest.raises(LmforgeError, match="already holds a cross-validation, which this one would overwrite"):
        cross_validate(base_run, str(data), tmp_path / "cv", quick(epochs=1), folds=3, log=lambda *a: None)
    assert sorted(p.name for p in (tmp_path / "cv").iterdir() if p.name != LOCK_NAME) == ["fold-2"]
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "cv.json").write_text("{}")
    with pytest.raises(LmforgeError, match="already holds a cross-validation"):
        cross_validate(base_run, str(data), tmp_path / "done", quick(epochs=1), folds=3, log=lambda *a: None)


def test_cross_validation_of_tagging_and_reading(base_run, tmp_path, capsys):
    rng = random.Random(2)
    tagged, qa = tmp_path / "ner.jsonl", tmp_path / "qa.jsonl"
    lines = []
    for _ in range(30):
        words = rng.choices(["amber", "apple", "zinc", "zero"], k=4)
        tags = [("I-A" if i and words[i - 1][0] == "a" else "B-A") if w[0] == "a" else "O" for i, w in enumerate(words)]
        lines.append(json.dumps({"tokens": words, "tags": tags}))
    tagged.write_text("\n".join(lines) + "\n")
    qa.write_text("".join(json.dumps({"question": "warm?", "context": f"rain {w} snow", "answer": w}) + "\n"
                          for w in rng.choices(WARM, k=30)))
    r = cross_validate(base_run, str(tagged), tmp_path / "cv-ner", quick(task="token", epochs=1), folds=3,
                       log=lambda *a: None)
    assert set(r["mean"]) == {"accuracy", "f1_macro", "entity_f1"} and len(r["values"]["entity_f1"]) == 3
    assert main(["cv", str(base_run), "--task", "qa", "--data", str(qa), "--folds", "2", "--epochs", "1",
                 "--out", str(tmp_path / "cv-qa")]) == 0
    out = capsys.readouterr().out
    assert "exact_match" in out and "f1 " in out and "accuracy" not in out


def test_cli_finetune_json(base_run, tmp_path, capsys):
    data = write_csv(tmp_path / "d.jsonl", [])
    data.write_text("".join(json.dumps({"review": t, "y": lab}) + "\n" for t, lab in rows(60)))
    code = main(["finetune", str(base_run), "--task", "classify", "--data", str(data), "--text-column", "review",
                 "--label-column", "y", "--epochs", "1", "--out", str(tmp_path / "run"), "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["test"]["n"] == 6 and "confusion_matrix" in r["test"]
    args = ["finetune", str(base_run), "--data", str(data), "--text-column", "review", "--label-column", "y",
            "--epochs", "1", "--out", str(tmp_path / "run"), "--json"]
    assert main(args) == 2 and "pass --resume" in capsys.readouterr().err  # a finished run is not overwritten
    assert main(args + ["--resume"]) == 0  # resuming a finished run scores its kept checkpoint again
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test"] == r["test"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("content, message", [
    ("text,category\nsun,warm\nrain,cold\n", "no column 'label'"),
    ("text,label\nsun,warm\nrain,warm\nday,warm\n", "single class"),
    ("text,label\n", "no rows|empty"),
    ("text,label\nsun,warm\nrain,\n", "empty label"),
])
def test_bad_labelled_files_are_one_clear_error(base_run, tmp_path, content, message):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    with pytest.raises(LmforgeError, match=message):
        finetune(base_run, str(data), tmp_path / "run", quick(), log=lambda *a: None)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_cli_reports_a_bad_file_in_one_line(base_run, tmp_path, capsys):
    data = tmp_path / "bad.csv"
    data.write_text("text,category\nsun,warm\n")
    assert main(["finetune", str(base_run), "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label" in err[0]


def test_text_longer_than_the_context_warns_or_fails(base_run, tmp_path):
    long = [(" ".join(["sun warm"] * 40), "warm") if i % 2 else (" ".join(["rain cold"] * 40), "cold")
            for i in range(40)]
    data = write_csv(tmp_path / "long.csv", long)
    said = []
    finetune(base_run, str(data), tmp_path / "run", quick(epochs=1), log=said.append)
    assert any("were cut" in s and "40 rows" in s for s in said)
    with pytest.raises(LmforgeError, match="longer than the model's context of 48"):
        finetune(base_run, str(data), tmp_path / "run2", quick(epochs=1, truncation="error"), log=lambda *a: None)


def test_qa_answer_missing_from_its_context_is_an_error(base_run, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "what?", "context": "sun warm day", "answer": "snow"}) + "\n")
    with pytest.raises(LmforgeError, match="does not occur in its context"):
        finetune(base_run, str(data), tmp_path / "run", quick(task="qa"), log=lambda *a: None)


def test_qa_fine_tunes_to_find_the_span(base_run, tmp_path):
    rng = random.Random(0)
    lines = []
    for i in range(80):
        w = rng.choice(WARM)
        ctx = " ".join(rng.choices(COLD, k=3) + [w] + rng.choices(COLD, k=2))
        lines.append(json.dumps({"question": "warm?", "context": ctx, "answer": w}))
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(lines) + "\n")
    report = finetune(base_run, str(data), tmp_path / "run", quick(task="qa", epochs=15), log=lambda *a: None)
    assert report["test"]["f1"] > 50


def test_long_contexts_are_read_in_overlapping_windows():
    from lmforge.data.labelled import encode_qa

    tok = train_char(["abcdefghij klmnopqrstuvwxyz?"])
    context = "abcdefghij" * 3 + " xyz " + "klmnopqrst" * 2  # 55 characters, one token each
    answer = "xyz"
    ex, offsets = encode_qa(tok, ["q?"], [context], [answer], max_len=25, stride=5)  # 20 context tokens a window
    assert ex.truncated == 0 and set(ex.rows) == {0} and len(ex) == 4  # windows start at 0, 15, 30, 45
    assert [o[0][0] for o in offsets] == [0, 15, 30, 45] and offsets[-1][-1][1] == len(context)
    holding = [w for w, (s, e) in enumerate(ex.targets) if (s, e) != (0, 0)]
    assert holding == [1, 2]  # "xyz" (characters 31-33) lies whole in the windows starting at 15 and 30
    for w in holding:
        first = ex.types[w].index(1)
        s, e = ex.targets[w]
        assert context[offsets[w][s - first][0]:offsets[w][e - first][1]] == answer
        assert len(ex.ids[w]) == 25 and ex.ids[w][0] == tok.cls_id
    short, _ = encode_qa(tok, ["q?"], ["abc xyz"], ["xyz"], max_len=25)
    assert len(short) == 1 and short.targets == [(8, 10)]  # [CLS] q ? [SEP] a b c _ x y z [SEP]
    cut, _ = encode_qa(tok, ["q?" * 20], [context], [answer], max_len=25)
    assert cut.truncated == 1 and all(len(ids) <= 25 for ids in cut.ids)
    with pytest.raises(LmforgeError, match="question is longer than half"):
        encode_qa(tok, ["q?" * 20], [context], [answer], max_len=25, truncation="error")


def test_windows_never_crawl_and_an_answer_no_window_holds_is_counted():
    from lmforge.data.labelled import encode_qa

    tok = train_char(["abcdefghij klmnopqrstuvwxyz?"])
    context = "abcdefghij" * 20  # 200 tokens
    ex, _ = encode_qa(tok, ["q?"], [context], ["cde"], max_len=25, stride=500)  # the overlap is capped at half
    assert len(ex) == 19  # windows of 20 start 10 apart: 0, 10, ..., 180
    ex, _ = encode_qa(tok, ["q?"], [context], ["ghijabcdefghij"], max_len=25, stride=0)  # 14 tokens at 6-19 hold
    assert ex.truncated == 0
    ex, _ = encode_qa(tok, ["q?"], ["xyz" * 5 + context], ["abcdefghij" * 2 + "a"], max_len=25, stride=0)
    assert ex.truncated == 1 and all(t == (0, 0) for t in ex.targets)  # 21 tokens: no window holds it
    with pytest.raises(LmforgeError, match="no window of 20 passage tokens holds the whole answer"):
        encode_qa(tok, ["q?"], ["xyz" * 5 + context], ["abcdefghij" * 2 + "a"], max_len=25, truncation="error")


def test_every_tag_lands_on_its_own_word():
    from lmforge.data.labelled import encode_tagged

    from lmforge.tokenizer import train_wordpiece

    tok = train_wordpiece(["ab xyz c"] * 20, 60)
    ex = encode_tagged(tok, [["ab", "", "xyz", "c"]], [[1, 2, 3, 4]], 32)
    assert ex.words == [[0, 2, 3]] and [t for t in ex.targets[0] if t != -100] == [1, 3, 4]  # "" has no token
    n = len(tok.encode("ab xyz"))
    cut = encode_tagged(tok, [["ab", "xyz", "c"]], [[1, 2, 3]], n + 2)  # [CLS] ab xyz [SEP]: "c" is cut
    assert cut.words == [[0, 1]] and cut.truncated == 1


def test_qa_finds_answers_past_the_first_window(base_run, tmp_path):
    from lmforge.data.labelled import encode_qa
    from lmforge.checkpoint import load_pretrained

    rng = random.Random(0)
    rows = []
    for i in range(120):  # the answer after 10 to 12 words: past the first 40-character window of the 48-token model
        k = rng.randint(10, 12)
        w = rng.choice(WARM)
        rows.append({"question": "warm?", "context": " ".join(rng.choices(COLD, k=k) + [w] + rng.choices(COLD, k=3)),
                     "answer": w})
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, tok = load_pretrained(base_run)
    ex, _ = encode_qa(tok, *([r[c] for r in rows] for c in ("question", "context", "answer")), max_len=48)
    first_windows = [t for i, t in enumerate(ex.targets) if i == 0 or ex.rows[i - 1] != ex.rows[i]]
    assert len(first_windows) == len(rows) < len(ex)
    assert all(t == (0, 0) for t in first_windows)  # read only up to the context's cut, no answer would be found
    report = finetune(base_run, str(data), tmp_path / "run", quick(task="qa", epochs=15), log=lambda *a: None)
    assert report["truncated"] == 0 and report["test"]["f1"] > 40
    out, rep = predict_file(tmp_path / "run", str(data))
    answers = [json.loads(x)["answer"] for x in out.read_text().splitlines()]
    assert len(answers) == 120 and rep["n"] == 120 and rep["f1"] > 40
    assert rep["exact_match"] == pytest.approx(100 * sum(a == r["answer"] for a, r in zip(answers, rows)) / 120)
    asked = tmp_path / "asked.jsonl"
    asked.write_text("".join(json.dumps({"question": r["question"], "context": r["context"]}) + "\n" for r in rows))
    out, rep = predict_file(tmp_path / "run", str(asked))
    assert rep is None and [json.loads(x)["answer"] for x in out.read_text().splitlines()] == answers


def test_a_stopped_finetune_resumes_to_the_same_result(base_run, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from lmforge.checkpoint import checkpoint_step
    from lmforge.tasks.classify import Classification

    data = write_csv(tmp_path / "d.csv", rows())
    cfg = quick(epochs=6, dtype="float32")  # bit for bit; 6 steps an epoch, an evaluation (and maybe a kept checkpoint) after each
    full = finetune(base_run, str(data), tmp_path / "full", cfg, log=lambda *a: None)
    real, calls = Classification.loss, {"n": 0}

    def crashes_in_epoch_4(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 21:
            raise KeyboardInterrupt  # stopped by the user, between two kept checkpoints
        return real(self, model, batch)

    monkeypatch.setattr(Classification, "loss", crashes_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        finetune(base_run, str(data), tmp_path / "run", cfg, log=lambda *a: None)
    monkeypatch.setattr(Classification, "loss", real)
    with pytest.raises(LmforgeError, match="already holds a checkpoint; pass --resume"):
        finetune(base_run, str(data), tmp_path / "run", cfg, log=lambda *a: None)
    with pytest.raises(LmforgeError, match="another lr"):
        finetune(base_run, str(data), tmp_path / "run", quick(epochs=6, dtype="float32", lr=2e-3), log=lambda *a: None, resume=True)
    with pytest.raises(LmforgeError, match="no fine-tuning run to resume"):
        finetune(base_run, str(data), tmp_path / "empty", cfg, log=lambda *a: None, resume=True)
    assert not (tmp_path / "run" / "finetune.json").exists()  # recipe.yaml is the whole truth
    recipe = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert recipe["task"]["epochs"] == 6 and recipe["train"]["lr"] == 3e-3 and recipe["train"]["max_steps"] == 36
    # a run of an earlier version: no task: section, its settings in finetune.json (one without doc_stride:
    # its default, not a difference)
    old = {"base": str(base_run), "data": str(data), "config": {**settings(cfg.recipe(base_run, data)), "task": "classify"}}
    del old["config"]["doc_stride"]
    (tmp_path / "run" / "finetune.json").write_text(json.dumps(old))
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k != "task"}))
    resumed = finetune(base_run, str(data), tmp_path / "run", cfg, log=lambda *a: None, resume=True)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same kept checkpoint: a later evaluation that only ties
    assert resumed["test"] == full["test"] and resumed["best_validation"] == full["best_validation"]  # is not kept
    assert checkpoint_step(tmp_path / "run") == checkpoint_step(tmp_path / "full") < full["steps"]


def test_patience_stops_when_validation_stops_improving(base_run, tmp_path):
    data = write_csv(tmp_path / "d.csv", rows())
    said = []
    report = finetune(base_run, str(data), tmp_path / "run", quick(lr=1e-12, patience=1), log=said.append)
    assert report["steps"] == 2 * 6  # 96 rows / 16 per step = 6 steps an epoch: a first eval, then one without gain
    assert any("stopping early at step 12" in s for s in said)


def test_class_weights_on_an_imbalanced_file(base_run, tmp_path):
    skewed = [r for i, r in enumerate(rows(200)) if r[1] == "warm" or i % 10 == 0]  # 100 warm, 20 cold
    data = write_csv(tmp_path / "d.csv", skewed)
    report = finetune(base_run, str(data), tmp_path / "run", quick(class_weights=True, metric="f1_macro"),
                      log=lambda *a: None)
    assert report["test"]["per_class"]["cold"]["support"] == 2
    assert report["config"]["class_weights"] is True


def test_token_classification_tags_words(base_run, tmp_path):
    rng = random.Random(0)
    lines = []
    a_words, z_words = ["amber", "apple", "arm"], ["zinc", "zero", "zone"]  # the tag shows in the first letter,
    for _ in range(80):                                                    # which is where it must be put
        words = rng.choices(a_words + z_words, k=5)
        lines.append(json.dumps({"tokens": words, "tags": ["A" if w in a_words else "Z" for w in words]}))
    data = tmp_path / "tags.jsonl"
    data.write_text("\n".join(lines) + "\n")
    report = finetune(base_run, str(data), tmp_path / "run", quick(task="token", epochs=10), log=lambda *a: None)
    assert report["test"]["n"] == 8 * 5  # every word of the 8 test rows scored once
    assert report["test"]["accuracy"] > 0.9


def test_bio_tags_are_scored_as_entities_and_can_pick_the_checkpoint(base_run, tmp_path, capsys):
    rng = random.Random(1)
    lines = []
    for _ in range(80):  # an entity is a run of a-words: B-A on its first word, I-A on the rest
        words = rng.choices(["amber", "apple", "arm", "zinc", "zero"], k=6)
        tags = [("I-A" if i and words[i - 1][0] == "a" else "B-A") if w[0] == "a" else "O" for i, w in enumerate(words)]
        lines.append(json.dumps({"tokens": words, "tags": tags}))
    data = tmp_path / "ner.jsonl"
    data.write_text("\n".join(lines) + "\n")
    report = finetune(base_run, str(data), tmp_path / "run", quick(task="token", epochs=10, metric="entity_f1"),
                      log=lambda *a: None)
    ents = report["test"]["entities"]
    assert ents["gold_entities"] > 8 and set(ents["per_type"]) <= {"A"}
    assert "entity_f1" in report["best_validation"] and ents["micro"]["f1"] > 0.5
    out, rep = predict_file(tmp_path / "run", str(data), tmp_path / "tags.jsonl")  # gold tags in the file: a report
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(got) == 80 and rep["entities"]["gold_entities"] > 80 and rep["entities"]["micro"]["f1"] > 0.5
    words_only = tmp_path / "words.jsonl"
    words_only.write_text("".join(json.dumps({"tokens": g["tokens"]}) + "\n" for g in got[:5]))
    out, rep = predict_file(tmp_path / "run", str(words_only))
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert rep is None and again == got[:5]  # the same tags without gold in the file
    words_only.write_text(json.dumps({"tokens": ["arm"], "tags": ["B-ORG"]}) + "\n")
    with pytest.raises(LmforgeError, match="'B-ORG' .* is not one the run was trained on"):
        predict_file(tmp_path / "run", str(words_only))
    for g in again:
        assert len(g["tags"]) == len(g["tokens"])
        assert all(" ".join(g["tokens"][e["start"]:e["end"] + 1]) == e["text"] and e["type"] == "A"
                   for e in g["entities"])
    with pytest.raises(LmforgeError, match="needs BIO or IOBES tags"):  # plain tags have no entities
        plain = tmp_path / "plain.jsonl"
        plain.write_text("".join(json.dumps({"tokens": ["a", "b"], "tags": ["X", "Y"]}) + "\n" for _ in range(12)))
        finetune(base_run, str(plain), tmp_path / "run2", quick(task="token", metric="entity_f1"), log=lambda *a: None)
    with pytest.raises(LmforgeError, match="metric='entity_f1' scores tagged entities, which only token classification"):
        quick(metric="entity_f1")
    assert not (tmp_path / "run2").exists()
    assert main(["finetune", str(base_run), "--task", "token", "--data", str(data), "--metric", "entity_f1", "--epochs",
                 "1", "--out", str(tmp_path / "run3")]) == 0
    assert "entity-level (CoNLL) precision" in capsys.readouterr().out


def test_token_rows_with_mismatched_tags_are_an_error(base_run, tmp_path):
    data = tmp_path / "tags.jsonl"
    data.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["X"]}) + "\n")
    with pytest.raises(LmforgeError, match="same length"):
        finetune(base_run, str(data), tmp_path / "run", quick(task="token"), log=lambda *a: None)


def test_first_piece_of_each_word_carries_its_tag():
    from lmforge.data.labelled import encode_tagged
    from lmforge.tokenizer import train_bpe, train_wordpiece

    words = [["sunlight", "warms", "the", "day"]]
    for tok in (train_wordpiece(["sun light warm s the day"] * 20, 120), train_bpe(["sun light warms the day"] * 5, 300)):
        ex = encode_tagged(tok, words, [[1, 2, 3, 4]], 32, encoder=tok.cls_id is not None)
        tagged = [t for t in ex.targets[0] if t != -100]
        assert tagged == [1, 2, 3, 4], (tok.kind, ex.targets[0])


@pytest.mark.parametrize("setting, message, flag_message", [
    (dict(max_length=2), "max_length=2 is too short", "--max-length 2 is too short"),
    (dict(max_length=-5), "max_length=-5 is too short", "--max-length -5 is too short"),
    (dict(max_length=0), "max_length=0 is too short", "--max-length 0 is too short"),
    (dict(evals_per_epoch=0), "evals_per_epoch=0 cannot be used; give 1 or more",
     "--evals-per-epoch 0 cannot be used; give 1 or more"),
    (dict(epochs=float("nan")), "epochs=nan is not a valid float", "--epochs nan is not a valid float"),
    (dict(lr=float("inf")), "lr=inf is not a valid float", "--lr inf is not a valid float"),
    (dict(patience=-1), "patience=-1 cannot be used", "--patience -1 cannot be used"),
    (dict(val_fraction=0.6, test_fraction=0.5), "leave no rows to train on", "--val-fraction 0.6 and the test share"),
])
def test_bad_settings_are_refused_before_any_work(setting, message, flag_message, base_run, tmp_path, capsys):
    """Python names the argument, the command line the flag, a recipe the key; nothing is written."""
    with pytest.raises(LmforgeError, match=message):
        quick(**setting)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in setting.items()]
    assert main(["finetune", str(base_run), "--data", "x.csv", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert flag_message in err and len(err.strip().splitlines()) == 1, err
    sets = [x for k, v in setting.items() for x in ("--set", f"{SHORTHANDS[k]}={v}")]
    assert main(["finetune", str(base_run), "--data", "x.csv", "--out", str(tmp_path / "r"), *sets]) == 2
    key = SHORTHANDS[next(iter(setting))]
    assert key in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_qa_with_a_tiny_max_length_is_refused_and_short_rows_still_end(base_run, tmp_path, capsys):
    from lmforge.data.labelled import encode_qa

    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "warm?", "context": "sun warm day", "answer": "warm"}) + "\n")
    code = main(["finetune", str(base_run), "--task", "qa", "--data", str(data), "--max-length", "2",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--max-length 2 is too short" in err[0]
    assert not (tmp_path / "run").exists()
    tok = train_char(["abcdefghij klmnopqrstuvwxyz?"])
    with pytest.raises(LmforgeError, match="max_length=4 is too short"):
        encode_qa(tok, ["q?"], ["abc"], ["abc"], max_len=4)
    ex, _ = encode_qa(tok, ["a long question?" * 3], ["abcdefghij"], ["c"], max_len=5)  # one question token a window
    assert ex.truncated == 1 and len(ex) == 10 and all(len(ids) == 5 for ids in ex.ids)


def test_truncation_error_names_the_row_of_the_file_for_every_task(base_run, tmp_path):
    """Rows are encoded split by split; the message still counts rows in the file (as predict does)."""
    data = rows(30)
    data[5] = (" ".join(["sun warm"] * 40), data[5][1])
    classify = write_csv(tmp_path / "long.csv", data)
    token, qa = tmp_path / "long.jsonl", tmp_path / "qa.jsonl"
    token.write_text("".join(json.dumps({"tokens": t.split(), "tags": [lab] * len(t.split())}) + "\n" for t, lab in data))
    qa.write_text("".join(json.dumps({"question": ("warm?" * 20 if i == 5 else "warm?"), "context": t,
                                      "answer": t.split()[0]}) + "\n" for i, (t, _) in enumerate(data)))
    for task, path in (("classify", classify), ("token", token), ("qa", qa)):
        with pytest.raises(LmforgeError, match=r"^row 6\b"):
            finetune(base_run, str(path), tmp_path / task, quick(task=task, truncation="error"), log=lambda *a: None)


@pytest.fixture(scope="module")
def classifier_run(base_run, tmp_path_factory):
    """An untrained classifier over cold / warm, saved as a fine-tuned run is (no finetune.json: default columns)."""
    import dataclasses

    from lmforge.checkpoint import load_checkpoint

    base, tok = load_checkpoint(base_run)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("classifier")
    save_checkpoint(out, build_model(dataclasses.replace(base.config, head="classify", labels=["cold", "warm"])), tok)
    return out


def test_predict_on_a_plain_text_file_labels_the_one_document(classifier_run, tmp_path, capsys):
    one = tmp_path / "one.txt"
    one.write_text("The cat loved the garden.\n")
    code = main(["predict", str(classifier_run), "--file", str(one)])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in (tmp_path / "one.predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["label"] in ("cold", "warm") and lines[0]["text"].startswith("The cat")


def test_predict_scores_the_rows_it_can_and_names_gold_labels_the_run_never_saw(classifier_run, tmp_path):
    data = write_csv(tmp_path / "new.csv", rows(8) + [("sun day", "maybe"), ("rain night", "")])
    said = []
    out, report = predict_file(classifier_run, str(data), log=said.append)
    assert len(out.read_text().splitlines()) == 10  # every row gets its prediction
    assert report["n"] == 8 and report["unscored"] == {"rows": 2, "labels": ["", "maybe"]}
    assert any("2 rows have a gold label the run was not trained on (an empty cell, 'maybe'" in s for s in said), said
    only_new = write_csv(tmp_path / "unknown.csv", [("sun day", "maybe")])
    out, report = predict_file(classifier_run, str(only_new), log=said.append)
    assert report is None and len(out.read_text().splitlines()) == 1


def test_predict_reads_a_hugging_face_classifier_and_refuses_a_bare_encoder(classifier_run, base_run, tmp_path):
    from lmforge.api import export_hf

    hf_classifier, hf_base = export_hf(classifier_run, tmp_path / "hf"), export_hf(base_run, tmp_path / "hf-base")
    data = write_csv(tmp_path / "d.csv", rows(8))
    mine, _ = predict_file(classifier_run, str(data), tmp_path / "mine.jsonl")
    theirs, report = predict_file(hf_classifier, str(data), tmp_path / "theirs.jsonl")
    assert report["n"] == 8 and [json.loads(x)["label"] for x in theirs.read_text().splitlines()] == \
        [json.loads(x)["label"] for x in mine.read_text().splitlines()]
    with pytest.raises(LmforgeError, match="is not a fine-tuned model .*; fine-tune one with `lmforge finetune`"):
        predict_file(hf_base, str(data))


def test_cli_column_errors_name_the_flag_that_sets_the_column(base_run, classifier_run, tmp_path, capsys):
    from tests.test_cli import assert_clear_error, run

    data = write_csv(tmp_path / "d.csv", rows(40))
    assert_clear_error(*run(capsys, "finetune", str(base_run), "--data", str(data), "--label-column", "y",
                            "--out", str(tmp_path / "a"))[::2], "no column 'y'", "choose one with --label-column")
    lines = tmp_path / "d.jsonl"
    lines.write_text(json.dumps({"review": "sun", "label": "warm"}) + "\n")
    assert_clear_error(*run(capsys, "cv", str(base_run), "--data", str(lines), "--out", str(tmp_path / "b"))[::2],
                       "no field 'text'", "choose one with --text-column")
    assert_clear_error(*run(capsys, "predict", str(classifier_run), "--file", str(lines))[::2],
                       "no field 'text'", "choose one with --text-column")


def test_finetune_refuses_a_file_without_columns_before_any_work(base_run, tmp_path, capsys):
    from tests.test_cli import assert_clear_error, run

    for name in ("d.txt", "d.json"):
        (tmp_path / name).write_text("sun warm day\n")
        code, _, err = run(capsys, "finetune", str(base_run), "--data", str(tmp_path / name), "--out", str(tmp_path / "c"))
        assert_clear_error(code, err, "is not a file of rows with named columns; give the labelled rows as a .csv")
    assert "label column" not in err and not (tmp_path / "c").exists()


def test_a_nan_loss_in_finetuning_names_the_flag_to_lower(base_run, tmp_path, capsys, monkeypatch):
    from lmforge.tasks.classify import Classification
    from tests.test_cli import assert_clear_error, run

    data = write_csv(tmp_path / "d.csv", rows(40))
    nan_loss = lambda self, model, batch: model.head.weight.sum() * float("nan")  # noqa: E731
    monkeypatch.setattr(Classification, "loss", nan_loss)
    code, _, err = run(capsys, "finetune", str(base_run), "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "n"),
                       "--json")  # (no progress bar on stderr)
    err = "".join(line for line in err.splitlines(True) if not line.startswith("precision: "))  # the run's first line
    assert_clear_error(code, err, "the training loss became nan", "lower --lr (e.g. --lr 1e-5)")
    assert "--set" not in err and "train.lr" not in err


def test_predict_help_names_the_file_it_writes(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "data.csv -> data.predictions.jsonl" in help_text and "FILE.predictions.jsonl" not in help_text


def test_cli_qa_finetune_names_only_the_files_it_writes(base_run, tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": "warm?", "context": f"rain {w} snow", "answer": w}) + "\n"
                            for w in WARM * 3))
    code = main(["finetune", str(base_run), "--task", "qa", "--data", str(data), "--epochs", "1", "--out",
                 str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0 and "report.json are in" in out and "confusion.png" not in out
    assert not (tmp_path / "run" / "confusion.png").exists()
