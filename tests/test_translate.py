"""Translation and summarisation end to end: a small encoder-decoder trained from scratch on made-up
parallel text learns it (the loss falls; its outputs beat copying the source), the run predicts and
translates from the CLI and Python, and bad input is one sentence."""

import json
import random

import pytest
import torch

from lmforge.cli import main
from lmforge.config import TaskConfig, TrainConfig, model_config_from_preset
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.tasks.translate import Translation
from lmforge.tokenizer import train_bpe
from lmforge.train.finetune import FinetuneConfig, finetune

WORDS = {"the": "el", "cat": "gato", "dog": "perro", "eats": "come", "sees": "ve", "fish": "pez", "big": "grande",
         "red": "rojo", "house": "casa", "bird": "pajaro", "runs": "corre", "and": "y"}
TINY = ["--set", "model.n_layer=2", "--set", "model.n_decoder_layer=2", "--set", "model.d_model=64",
        "--set", "model.n_head=4", "--set", "model.d_ff=128", "--set", "model.dropout=0.0"]


def pairs_file(path, n=400, seed=0):
    """Sentences of a made-up grammar and their word-for-word 'Spanish': a mapping a tiny model learns."""
    rng = random.Random(seed)
    keys = list(WORDS)
    rows = []
    for _ in range(n):
        en = [rng.choice(keys) for _ in range(rng.randint(1, 4))]
        rows.append({"en": " ".join(en), "es": " ".join(WORDS[w] for w in en)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("translate")
    data = pairs_file(tmp / "pairs.jsonl")
    out = tmp / "run"
    main(["finetune", "t5-mini", "--task", "translate", "--data", str(data), "--source-column", "en",
          "--target-column", "es", "--out", str(out), "--epochs", "30", "--batch-size", "16", "--lr", "3e-3",
          "--num-beams", "2", "--set", "task.val_rows=40", "--set", "data.vocab_size=300", "--set",
          "train.time_limit_minutes=0", "--set", "train.dtype=float32", *TINY, "--json"])
    return out, data


def test_a_model_from_scratch_learns_to_translate_and_beats_copying(trained):
    out, _ = trained
    report = json.loads((out / "report.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "lr" in m]  # the training log lines
    assert losses[-1] < 0.3 * losses[0]
    assert report["baseline"]["name"] == "copy"
    assert report["test"]["bleu"] > report["baseline"]["bleu"] + 10
    assert report["test"]["chrf"] > report["baseline"]["chrf"] + 30
    lo, hi = report["test"]["bleu_ci"]
    assert lo <= report["test"]["bleu"] <= hi
    assert "bleu" in report["best_validation"]
    assert (out / "recipe.yaml").read_text().count("kind: translate") == 1


def test_translate_command_and_predict_file(trained, tmp_path, capsys):
    out, _ = trained
    main(["translate", str(out), "fish", "--json"])
    said = json.loads(capsys.readouterr().out)
    assert said == {"source": "fish", "output": "pez"}
    src = tmp_path / "new.jsonl"
    src.write_text(json.dumps({"en": "house", "es": "casa"}) + "\n" + json.dumps({"en": "the dog", "es": "el perro"})
                   + "\n")
    main(["predict", str(out), "--file", str(src), "--json"])
    result = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in (tmp_path / "new.predictions.jsonl").read_text().splitlines()]
    assert lines[0] == {"source": "house", "output": "casa", "reference": "casa"} and len(lines) == 2
    assert result["report"]["n"] == 2 and result["report"]["chrf"] > 50
    text = tmp_path / "new.txt"
    text.write_text("fish\n\nbird\n")
    main(["translate", str(out), "--file", str(text), "--json"])
    assert [json.loads(x)["output"] for x in (tmp_path / "new.predictions.jsonl").read_text().splitlines()] == \
        ["pez", "pajaro"]


def test_backtranslation_adds_the_runs_output_with_the_label(trained, tmp_path, capsys):
    """`data augment --ops backtranslate --via RUN`: one run gives each row's translation as a new row,
    the label kept (THERE,BACK makes the round trip the same way, through two runs)."""
    out, _ = trained
    src = tmp_path / "rows.csv"
    src.write_text("text,label\nthe fish,a\nthe big house,b\n", encoding="utf-8")
    assert main(["data", "augment", str(src), "--out", str(tmp_path / "o.csv"), "--ops", "backtranslate", "--via",
                 str(out), "--task", "classify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 2
    from lmforge.train.predict import translate_texts
    fish, house = translate_texts(out, ["the fish", "the big house"], log=lambda *a: None)
    assert (tmp_path / "o.csv").read_text().splitlines() == ["text,label", "the fish,a", f"{fish},a",
                                                            "the big house,b", f"{house},b"]
    assert main(["data", "augment", str(src), "--out", str(tmp_path / "o2.csv"), "--ops", "backtranslate", "--via",
                 f"{out},{out},{out}"]) == 2
    assert "one or two runs" in capsys.readouterr().err


def test_python_front_door_generates_from_a_source(trained):
    import lmforge

    lm = lmforge.load(trained[0])
    assert lm.generate("house", temperature=0.0, max_new_tokens=20) == "casa"
    cross, src, tgt = lm.cross_attention("the red house", "el rojo casa", return_tokens=True)
    assert cross[0].shape == (4, len(tgt), len(src))
    torch.testing.assert_close(cross[0].sum(-1), torch.ones(4, len(tgt)))


def test_cross_attention_map_from_the_cli(trained, tmp_path, capsys):
    png = tmp_path / "cross.png"
    main(["attention", str(trained[0]), "the big dog", "--target", "el grande perro", "--cross", "--out", str(png),
          "--json"])
    r = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 0 and len(r["weights"]) == len(r["target_tokens"])
    assert len(r["weights"][0]) == len(r["tokens"])


def run_cli(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_a_second_run_into_the_same_directory_is_refused(trained, capsys):
    out, data = trained
    before = (out / "model.safetensors").read_bytes()
    err = run_cli(["finetune", "t5-mini", "--task", "translate", "--data", str(data), "--source-column", "en",
                   "--target-column", "es", "--out", str(out)], capsys)
    assert "--resume" in err and (out / "model.safetensors").read_bytes() == before


def test_bad_pairs_are_one_sentence(tmp_path, capsys):
    data = pairs_file(tmp_path / "pairs.jsonl", n=30)
    common = ["--task", "translate", "--data", str(data), "--out", str(tmp_path / "r")]
    err = run_cli(["finetune", "t5-mini", *common, "--source-column", "fr", "--target-column", "es"], capsys)
    assert "fr" in err and "--source-column" in err
    err = run_cli(["finetune", "gpt-mini", *common, "--source-column", "en", "--target-column", "es"], capsys)
    assert "gpt" in err and "t5-mini" in err
    err = run_cli(["finetune", "t5-mini", *common, "--source-column", "en", "--target-column", "es",
                   "--metric", "accuracy"], capsys)
    assert "--metric" in err
    assert not (tmp_path / "r").exists()


def test_truncation_error_names_the_row_and_the_setting():
    tok = train_bpe(["the cat eats fish " * 20], 300)
    cfg = model_config_from_preset("t5-mini", vocab_size=tok.vocab_size, context_length=16)
    task = Translation(TaskConfig(kind="translate", metric="bleu", truncation="error"), TrainConfig(), tok, cfg)
    with pytest.raises(LmforgeError) as e:
        task.encode(["the cat"] * 2 + ["the cat eats fish " * 5], ["el gato"] * 3)
    assert "row 3" in str(e.value) and e.value.field == "task.max_length"
    warn = Translation(TaskConfig(kind="translate", metric="bleu"), TrainConfig(), tok, cfg)
    enc = warn.encode(["the cat eats fish " * 5], ["el gato come pez " * 5])
    assert enc.truncated == 1 and enc.truncated_targets == 1 and len(enc.src[0]) == 16 and len(enc.tgt[0]) == 16


def test_a_decoder_only_model_cannot_translate():
    tok = train_bpe(["the cat eats fish"], 300)
    gpt = build_model(model_config_from_preset("gpt-micro", vocab_size=tok.vocab_size)).config
    with pytest.raises(LmforgeError, match="encoder-decoder"):
        Translation(TaskConfig(kind="translate", metric="bleu"), TrainConfig(), tok, gpt)


def test_finetune_python_front_door_names_arguments(tmp_path):
    with pytest.raises(LmforgeError, match="label_smoothing"):
        FinetuneConfig(task="translate", label_smoothing=1.5)
    with pytest.raises(LmforgeError, match="num_beams"):
        finetune("t5-mini", "x.jsonl", tmp_path / "r", FinetuneConfig(task="translate", num_beams=0))


def test_decoding_batches_hold_at_most_so_many_rows_and_cache_slots():
    from lmforge.config import GenerateConfig
    from lmforge.evaluate.decoding import length_batches

    rows = [[1] * n for n in (5, 30, 12, 30, 2, 7, 9, 1, 30, 4)]
    settings = lambda chunk: GenerateConfig(max_new_tokens=2 * max(map(len, chunk)) + 10, num_beams=4)  # noqa: E731
    batches = length_batches(rows, settings, batch_size=3, slots=4 * 71 * 2)  # two 30-token sources' beams fit
    assert sorted(i for b in batches for i in b) == list(range(len(rows)))
    assert [len(rows[b[0]]) for b in batches] == sorted((len(rows[b[0]]) for b in batches), reverse=True)
    for b in batches:
        per_row = 4 * (2 * len(rows[b[0]]) + 10 + 1)
        assert len(b) <= 3 and (len(b) == 1 or len(b) * per_row <= 4 * 71 * 2)
    # two 30-token sources fill the slots (twice: 30 + 30, then 30 + 12); the short ones come three at a time
    assert [len(b) for b in batches] == [2, 2, 3, 3]


def test_lora_on_a_trained_translator_adapts_cross_attention_alone(trained, tmp_path, capsys):
    from lmforge.checkpoint import load_checkpoint
    from lmforge.models.lora import LoRALinear

    out, data = trained
    run = tmp_path / "lora"
    code = main(["finetune", str(out), "--task", "translate", "--data", str(data), "--source-column", "en",
                 "--target-column", "es", "--out", str(run), "--epochs", "2", "--batch-size", "16", "--lr", "3e-3",
                 "--num-beams", "2", "--lora-rank", "4", "--lora-targets", "q,kv", "--set", "task.val_rows=20",
                 "--set", "train.time_limit_minutes=0", "--set", "train.dtype=float32", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and 0 < report["lora"]["fraction"] < 0.05
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["target_modules"] == ["kv", "q"] and config["base_model_name_or_path"] == str(out.resolve())
    assert not (run / "model.safetensors").exists() and report["test"]["chrf"] > report["baseline"]["chrf"]
    model, _ = load_checkpoint(run)
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert adapted == {"q", "kv"}
    assert main(["translate", str(run), "red house", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"]
