"""lmforge compress-report: one row per run with its changes against the first, and the plot."""

import json

import pytest

from lmforge.cli import main
from tests.servers import tiny_run

TEXT = ["the cat sat on the mat and the dog sat on the log"] * 20


def test_a_language_model_and_its_copies_side_by_side(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    text = tmp_path / "val.txt"
    text.write_text(" ".join(TEXT), encoding="utf-8")
    assert main(["quantize", str(run), "--bits", "8", "--out", str(tmp_path / "q8")]) == 0
    assert main(["prune", str(run), "--structure", "neurons", "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    png = tmp_path / "report.png"
    assert main(["compress-report", str(run), str(tmp_path / "q8"), str(tmp_path / "p"), "--file", str(text),
                 "--plot", str(png), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["run"] for r in rows] == [str(run), str(tmp_path / "q8"), str(tmp_path / "p")]
    assert rows[1]["bytes"] < rows[0]["bytes"] and rows[2]["parameters"] < rows[0]["parameters"]
    assert all(r["tokens_per_s_1"] > 0 and r["tokens_per_s_8"] > 0 and r["perplexity"] > 1 for r in rows)
    assert rows[0]["change_percent"] == {k: 0.0 for k in rows[0]["change_percent"]}
    assert rows[1]["change_percent"]["bytes"] == pytest.approx(100 * (rows[1]["bytes"] / rows[0]["bytes"] - 1))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_classifier_is_scored_on_its_own_test_split(fine_tuned_classifier, tmp_path, capsys):
    run, _ = fine_tuned_classifier
    assert main(["quantize", str(run), "--bits", "8", "--out", str(tmp_path / "q8")]) == 0
    capsys.readouterr()
    assert main(["compress-report", str(run), str(tmp_path / "q8"), "--plot", str(tmp_path / "c.png"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    report = json.loads((run / "report.json").read_text())
    assert rows[0]["accuracy"] == pytest.approx(report["test"]["accuracy"])  # the split fine-tuning scored
    assert abs(rows[1]["accuracy"] - rows[0]["accuracy"]) <= 0.1 and rows[1]["tokens_per_s_1"] is None


def test_mixed_kinds_and_folders_without_weights_are_refused(fine_tuned_classifier, tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    text = tmp_path / "val.txt"
    text.write_text(" ".join(TEXT), encoding="utf-8")
    assert main(["compress-report", str(run), str(fine_tuned_classifier[0]), "--file", str(text),
                 "--plot", str(tmp_path / "x.png")]) == 2
    assert "mix language models and classifiers" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compress-report", str(tmp_path / "empty"), "--plot", str(tmp_path / "y.png")]) == 2
    assert "holds no weights" in capsys.readouterr().err
