"""Attention maps from a tiny GPT, selecting a layer and head, and heatmaps with English and Chinese tokens."""

import os
import warnings

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.interpret import attention, attention_maps, plot_attention, select
from lmforge.models.gpt import GPT


@pytest.fixture(scope="module")
def maps():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, context_length=16, n_layer=3, n_head=2, d_model=16, dropout=0.1))
    model.train()
    ids = torch.randint(0, 50, (2, 6))
    weights = attention_maps(model, ids)
    assert model.training  # put back in the mode it was in
    return weights


def test_attention_maps_shapes_and_rows(maps):
    assert len(maps) == 3
    for w in maps:
        assert w.shape == (2, 2, 6, 6)  # (B, H, T, S)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6))  # every row is a distribution
        assert (w.triu(1) == 0).all()  # causal: no weight on later keys


def test_select_and_its_errors(maps):
    torch.testing.assert_close(select(maps, 2, 1), maps[2][0, 1])
    torch.testing.assert_close(select(maps, 0, 1, row=1), maps[0][1, 1])
    torch.testing.assert_close(select(maps, 1, None), maps[1][0].mean(0))
    with pytest.raises(LmforgeError, match=r"layer 7 does not exist; the model has 3 layers \(0-2\)"):
        select(maps, 7, 0)
    with pytest.raises(LmforgeError, match=r"layer -1 does not exist"):
        select(maps, -1, 0)
    with pytest.raises(LmforgeError, match=r"head 2 does not exist; layer 0 has 2 heads \(0-1\)"):
        select(maps, 0, 2)
    with pytest.raises(LmforgeError, match="batch row 5"):
        select(maps, 0, 0, row=5)


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_plot_attention_english(tmp_path, maps):
    tokens = ["The", "cat", "sat", "on", "the", "mat"]
    path = plot_attention(select(maps, 0, 0), tokens, tokens, tmp_path / "en.png", title="layer 0, head 0")
    assert _is_png(path)
    assert os.listdir(tmp_path) == ["en.png"]  # written atomically: no temporary file left
    plot_attention(select(maps, 0, 0).numpy(), tokens, tokens, tmp_path / "en.png")  # numpy, overwrite
    assert _is_png(tmp_path / "en.png")


def test_plot_attention_chinese(tmp_path, maps):
    tokens = ["我", "爱", "北京", "天安门", "。", "ok"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_attention(select(maps, 1, None), tokens, tokens, tmp_path / "zh.png")
    assert _is_png(tmp_path / "zh.png")
    messages = [str(w.message) for w in caught]
    if attention.find_cjk_font() is None:  # one line saying what to install, not one per glyph
        assert len(messages) == 1 and "fonts-noto-cjk" in messages[0]
    else:
        assert not any("missing" in m for m in messages), messages


def test_missing_cjk_font_warns_once(tmp_path, maps, monkeypatch):
    monkeypatch.setattr(attention, "find_cjk_font", lambda: None)
    with pytest.warns(UserWarning, match="may show as boxes.*apt install fonts-noto-cjk") as caught:
        plot_attention(select(maps, 0, 1), list("我爱北京天安"), list("我爱北京天安"), tmp_path / "zh.png")
    assert len(caught) == 1
    assert _is_png(tmp_path / "zh.png")


def test_plot_attention_shape_errors(tmp_path, maps):
    with pytest.raises(LmforgeError, match="one token per row"):
        plot_attention(select(maps, 0, 0), ["a"] * 5, ["a"] * 6, tmp_path / "x.png")
    with pytest.raises(LmforgeError, match="select"):
        plot_attention(maps[0], ["a"] * 6, ["a"] * 6, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli_attention_draws_one_head_of_a_run(tmp_path, capsys):
    import json

    from lmforge.cli import main
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model
    from lmforge.tokenizer import train_char
    from lmforge.checkpoint import save_checkpoint

    tok = train_char(["the cat sat on the mat", "人民日报"])
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=32, n_layer=2, d_model=32,
                                   n_head=2)
    save_checkpoint(tmp_path / "run", build_model(cfg), tok)
    out = tmp_path / "map.png"
    assert main(["attention", str(tmp_path / "run"), "人民 cat", "--layer", "1", "--head", "1", "--out", str(out),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert r["tokens"][0] == "<|cls|>" and r["tokens"][1] == "人" and len(r["weights"]) == len(r["tokens"]) == 8
    assert all(abs(sum(row) - 1) < 1e-4 for row in r["weights"])  # each query's weights sum to 1
    assert main(["attention", str(tmp_path / "run"), "cat", "--layer", "5", "--out", str(out)]) == 2
    assert "layer 5 does not exist; the model has 2 layers (0-1)" in capsys.readouterr().err
    code = main(["attention", str(tmp_path / "run"), "the cat " * 4, "--out", str(tmp_path / "long.png")])
    err = capsys.readouterr().err.strip().splitlines()  # 32 tokens: an encoder refuses, as a decoder does
    assert code == 2 and len(err) == 1 and "the text is 32 tokens, more than the 30 that the model's context" in err[0]
    assert not (tmp_path / "long.png").exists()
