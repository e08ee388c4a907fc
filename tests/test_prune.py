"""Pruning: masks of the asked sparsity and pattern, Wanda's scores by hand, structured removal that
shrinks the model and changes nothing where the removed parts were zero, and every bad input."""

import json

import pytest
import torch

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.cli import main
from lmforge.compress.prune import n_m_mask, remove_parts, unstructured_mask, weight_scores
from lmforge.config import model_config_from_preset
from lmforge.models import build_model
from tests.servers import tiny_run

TEXT = ["the cat sat on the mat and the dog sat on the log"] * 20


def test_wanda_scores_weigh_each_weight_by_its_inputs_norm():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    energy = torch.tensor([4.0, 0.25])  # E[x^2]: the first input is driven 4x as hard as the second
    assert weight_scores(w, None).tolist() == [[1.0, 2.0], [0.5, 3.0]]
    assert weight_scores(w, energy).tolist() == [[2.0, 1.0], [1.0, 1.5]]


def test_unstructured_masks_remove_the_asked_fraction_by_matrix_or_by_row():
    torch.manual_seed(0)
    scores = torch.rand(8, 32)
    whole = unstructured_mask(scores, 0.5, per_row=False)
    rows = unstructured_mask(scores, 0.25, per_row=True)
    assert (~whole).sum() == 128 and ((~rows).sum(1) == 8).all()
    assert scores[whole].min() >= scores[~whole].max()  # what goes is the lowest
    assert unstructured_mask(scores, 0.0, per_row=True).all()


def test_two_of_every_four_stay_the_highest_two():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.2]])
    assert n_m_mask(scores).tolist() == [[True, False, True, False, False, True, True, False]]


def _zero_outputs(model, layer: int, part: str, units):
    """Make parts of one block contribute nothing: the output projection's columns of some neurons
    (or heads, with their value rows) set to zero."""
    b = model.blocks[layer]
    with torch.no_grad():
        if part == "neurons":
            b.mlp.proj.weight[:, units] = 0
        else:
            D, H, G = b.attn.head_dim, b.attn.n_head, b.attn.n_kv_head
            for g in units:
                for h in range(g * (H // G), (g + 1) * (H // G)):
                    b.attn.proj.weight[:, h * D:(h + 1) * D] = 0
                b.attn.qkv.weight[(H + G + g) * D:(H + G + g + 1) * D] = 0


@pytest.mark.parametrize("preset,part", [("gpt-micro", "neurons"), ("gpt-micro", "heads"),
                                         ("llama-mini", "heads"), ("llama-mini", "neurons")])
def test_removing_parts_that_were_zero_shrinks_the_model_and_keeps_its_outputs(preset, part):
    torch.manual_seed(0)
    over = dict(n_kv_head=2, n_head=4) if preset == "llama-mini" else {}
    model = build_model(model_config_from_preset(preset, vocab_size=50, n_layer=2, d_model=64, **over)).eval()
    cfg = model.config
    units = cfg.d_ff if part == "neurons" else cfg.n_kv_head
    gone = list(range(1, 1 + units // 2))
    for layer in range(cfg.n_layer):
        _zero_outputs(model, layer, part, gone)
    smaller = remove_parts(model, part, 0.5, None)
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        assert torch.allclose(smaller(ids), model(ids), atol=1e-5)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(smaller) < n(model)
    if part == "neurons":
        assert smaller.config.d_ff == cfg.d_ff // 2 and smaller.blocks[0].mlp.proj.weight.shape[1] == cfg.d_ff // 2
    else:
        assert smaller.config.n_kv_head == cfg.n_kv_head // 2 and smaller.config.n_head == cfg.n_head // 2
        assert smaller.config.head_dim == cfg.head_dim


def test_a_pruned_run_is_an_ordinary_run_of_the_asked_sparsity(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["prune", str(run), "--sparsity", "0.5", "--method", "magnitude", "--out", str(tmp_path / "p"),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["zero_fraction"] == pytest.approx(0.5, abs=0.01)
    model, _ = load_checkpoint(tmp_path / "p")
    w = model.blocks[0].mlp.fc.weight
    assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert main(["generate", str(tmp_path / "p"), "the cat", "--max-new-tokens", "4", "--temperature", "0"]) == 0


def test_wanda_calibrates_on_a_file_and_two_of_four_holds_in_every_row(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(TEXT), encoding="utf-8")
    assert main(["prune", str(run), "--structure", "2:4", "--method", "wanda", "--calibration", str(calib),
                 "--out", str(tmp_path / "p"), "--json"]) == 0
    model, _ = load_checkpoint(tmp_path / "p")
    for name in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"):
        w = model.blocks[1].get_submodule(name).weight
        assert ((w != 0).reshape(w.shape[0], -1, 4).sum(-1) <= 2).all()


def test_a_head_pruned_model_decodes_natively_as_in_pytorch(tmp_path):
    import lmforge

    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["prune", str(run), "--structure", "heads", "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 0
    native, plain = lmforge.load(str(tmp_path / "p"), backend="auto"), lmforge.load(str(tmp_path / "p"), backend="torch")
    assert native.config.n_head == 1 and native.config.head_dim * 2 == native.config.d_model
    if native.backend != "native":
        pytest.skip(f"the native step is not here: {native.backend_reason}")
    assert native.generate("the cat", max_new_tokens=10, temperature=0) == plain.generate("the cat", max_new_tokens=10,
                                                                                          temperature=0)


def test_a_head_pruned_gpt2_shape_cannot_export_and_says_why(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["prune", str(run), "--structure", "heads", "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 0
    assert main(["export", str(tmp_path / "p"), "--to", "hf", str(tmp_path / "hf")]) == 2
    assert "heads were pruned" in capsys.readouterr().err


@pytest.mark.parametrize("flags,says", [
    (["--sparsity", "1.0"], "must be at least 0 and below 1"),
    (["--sparsity", "-0.1"], "must be at least 0 and below 1"),
    (["--structure", "2:4", "--sparsity", "0.3"], "keeps two of every four"),
    (["--method", "random", "--sparsity", "0.5"], "--method random is not known"),
    (["--structure", "rows", "--sparsity", "0.5"], "--structure rows is not known"),
    (["--structure", "neurons"], "needs --sparsity"),
    (["--structure", "heads", "--sparsity", "0.1"], "removes none of each layer's 2 key/value heads"),
    (["--sparsity", "0.5", "--method", "wanda"], "has no recipe.yaml naming its training text"),
    (["--sparsity", "0.5", "--recover-steps", "-3"], "--recover-steps -3 must be 0 or more"),
])
def test_bad_settings_say_one_sentence_and_write_nothing(tmp_path, capsys, flags, says):
    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["prune", str(run), *flags, "--out", str(tmp_path / "p")]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_quantised_and_encoder_decoder_runs_are_refused(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["quantize", str(run), "--bits", "8", "--out", str(tmp_path / "q")]) == 0
    assert main(["prune", str(tmp_path / "q"), "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 2
    assert "is quantised; prune the float run" in capsys.readouterr().err
    t5 = build_model(model_config_from_preset("t5-mini", vocab_size=300, n_layer=1, d_model=32, d_ff=64, n_head=2))
    from lmforge.tokenizer import train_bpe

    save_checkpoint(tmp_path / "t5", t5, train_bpe(TEXT, 300))
    assert main(["prune", str(tmp_path / "t5"), "--structure", "neurons", "--sparsity", "0.5",
                 "--out", str(tmp_path / "p2")]) == 2
    assert "works on GPT and BERT models" in capsys.readouterr().err and not (tmp_path / "p2").exists()


def test_recovery_trains_the_pruned_model_and_keeps_its_zeros(pretrained, tmp_path, capsys):
    capsys.readouterr()
    assert main(["prune", str(pretrained), "--sparsity", "0.7", "--recover-steps", "20", "--out", str(tmp_path / "p"),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    rec = r["recovery"]
    assert rec["steps"] == 20 and rec["val_loss_after"] < rec["val_loss_before"]
    assert r["zero_fraction"] == pytest.approx(0.7, abs=0.01)  # the masks held through training
    model, _ = load_checkpoint(tmp_path / "p")
    assert (model.blocks[0].mlp.fc.weight == 0).float().mean().item() == pytest.approx(0.7, abs=0.01)


def test_recovery_of_a_smaller_model_writes_a_recipe_of_its_shape(pretrained, tmp_path):
    import yaml

    assert main(["prune", str(pretrained), "--structure", "neurons", "--sparsity", "0.5", "--method", "wanda",
                 "--recover-steps", "5", "--out", str(tmp_path / "p")]) == 0
    recipe = yaml.safe_load((tmp_path / "p" / "recipe.yaml").read_text())
    assert recipe["model"]["d_ff"] == 128 and recipe["train"]["max_steps"] == 5
    assert main(["eval", str(tmp_path / "p"), "--json"]) == 0


def test_recovery_needs_a_pretraining_recipe(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", TEXT)
    assert main(["prune", str(run), "--sparsity", "0.5", "--recover-steps", "5", "--out", str(tmp_path / "p")]) == 2
    assert "has no recipe.yaml" in capsys.readouterr().err and not (tmp_path / "p").exists()
