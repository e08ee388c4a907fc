"""LoRA (models/lora.py): the formula by hand, step 0 equals the base, the trainable count by hand, merge
equals the adapter, the PEFT layout read by `peft` onto the exported base, and fine-tuning with it."""

import json

import pytest
import torch
from torch import nn

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.cli import main
from lmforge.config import model_config_from_preset
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.models.lora import LoRALinear, LoraSettings, add_lora, merge_lora
from lmforge.tokenizer import train_char
from lmforge.train.finetune import finetune
from tests.test_finetune import quick, rows, write_csv

GPT = dict(vocab_size=40, context_length=32, n_layer=2, d_model=32, n_head=4, d_ff=128, dropout=0.0)


def gpt(shape="gpt2", **kw):
    torch.manual_seed(0)
    preset = {"gpt2": "gpt-small", "llama": "llama-1b"}[shape]
    extra = dict(n_kv_head=2) if shape == "llama" else dict(position="learned", norm="layernorm", activation="gelu")
    return build_model(model_config_from_preset(preset, **{**GPT, **extra, **kw})).eval()


def encoder_base_and_rows(tmp_path):
    """A tiny untrained encoder saved as a run at tmp_path / "base", and labelled rows for it."""
    tok = train_char([t for t, _ in rows()])
    torch.manual_seed(0)
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=48, n_layer=2,
                                   d_model=32, n_head=2, dropout=0.0)
    save_checkpoint(tmp_path / "base", build_model(cfg), tok)
    return write_csv(tmp_path / "d.csv", rows())


def randomise(model):
    """Adapters as after training: B no longer zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.2)


def test_the_formula_by_hand():
    base = nn.Linear(2, 2)
    with torch.no_grad():
        base.weight.copy_(torch.eye(2))
        base.bias.zero_()
    layer = LoRALinear(base, rank=1, scaling=2.0)  # alpha 2, r 1
    with torch.no_grad():
        layer.lora_A.copy_(torch.tensor([[1.0, 1.0]]))
        layer.lora_B.copy_(torch.tensor([[1.0], [2.0]]))
    # W x = [1, 2]; A x = 3; B (A x) = [3, 6]; times alpha / r = 2: [6, 12]
    assert layer(torch.tensor([1.0, 2.0])).tolist() == [7.0, 14.0]
    assert layer.weight is base.weight  # the base's own parameter, under its own name


def test_step_zero_is_the_base_and_only_adapters_train():
    model = gpt()
    x = torch.randint(0, 40, (2, 9))
    before = model(x)
    report = add_lora(model, LoraSettings(rank=4, alpha=8, dropout=0.0))
    assert torch.equal(model(x), before)  # B starts at zero
    # per layer: qkv 4 (32 + 96), attention proj 4 (32 + 32), fc 4 (32 + 128), feed-forward proj 4 (128 + 32)
    assert report["trainable"] == 2 * (512 + 256 + 640 + 640) == 4096 and report["layers"] == 8
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.endswith(("lora_A", "lora_B")) for n in trained)
    assert report["fraction"] == pytest.approx(4096 / sum(p.numel() for p in model.parameters()))


@pytest.mark.parametrize("shape", ["gpt2", "llama"])
def test_merge_gives_the_adapters_logits(shape):
    model = gpt(shape)
    add_lora(model, LoraSettings(rank=4, alpha=8, dropout=0.0))
    randomise(model)
    x = torch.randint(0, 40, (2, 9))
    adapted = model(x)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)


def adapted_run(tmp_path, shape):
    """A base run, and a LoRA run of it saved as the trainer saves one."""
    tok = train_char(["abcdefghij klmnop qrstuvwxyz"])
    base = gpt(shape, vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "base", base, tok)
    add_lora(base, LoraSettings(rank=4, alpha=8, dropout=0.0, base=str(tmp_path / "base")))
    randomise(base)
    save_checkpoint(tmp_path / "lora", base, tok, step=7)
    return base, tok


@pytest.mark.parametrize("shape", ["gpt2", "llama"])
def test_a_lora_run_saves_the_adapter_alone_and_loads_back_onto_its_base(tmp_path, shape):
    model, _ = adapted_run(tmp_path, shape)
    files = {p.name for p in (tmp_path / "lora").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files and "model.safetensors" not in files
    loaded, _ = load_checkpoint(tmp_path / "lora")
    x = torch.randint(0, model.config.vocab_size, (2, 9))
    torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape", ["gpt2", "llama"])
def test_peft_loads_the_adapter_onto_the_exported_base(tmp_path, shape):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from lmforge.api import export_hf

    model, _ = adapted_run(tmp_path, shape)
    export_hf(str(tmp_path / "base"), tmp_path / "hf")
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    theirs = peft.PeftModel.from_pretrained(hf_base, tmp_path / "lora").eval()
    x = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=x).logits, model(x), atol=1e-4, rtol=1e-4)
        merged_export = tmp_path / "hf-merged"  # exporting the LoRA run writes its merged weights
        export_hf(str(tmp_path / "lora"), merged_export)
        again = transformers.AutoModelForCausalLM.from_pretrained(merged_export)
        torch.testing.assert_close(again(input_ids=x).logits, model(x), atol=1e-4, rtol=1e-4)


def test_merge_command_writes_an_ordinary_run_with_the_same_logits(tmp_path, capsys):
    model, _ = adapted_run(tmp_path, "gpt2")
    (tmp_path / "lora" / "generation_config.json").write_text('{"eos_token_id": [3]}\n')  # a chat run's end-of-turn
    assert main(["merge", str(tmp_path / "lora"), "--out", str(tmp_path / "merged"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["merged_layers"] == 8
    assert (tmp_path / "merged" / "generation_config.json").read_text() == '{"eos_token_id": [3]}\n'
    merged, _ = load_checkpoint(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").is_file() and not any(
        isinstance(m, LoRALinear) for m in merged.modules())
    x = torch.randint(0, model.config.vocab_size, (2, 9))
    torch.testing.assert_close(merged(x), model(x), atol=1e-5, rtol=1e-5)
    assert main(["merge", str(tmp_path / "merged"), "--out", str(tmp_path / "again")]) == 2  # no adapter there
    assert "holds no LoRA adapter" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "lora"), "--out", str(tmp_path / "merged")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err


def test_a_lora_run_whose_base_is_gone_says_so(tmp_path):
    adapted_run(tmp_path, "gpt2")
    (tmp_path / "base" / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    import shutil

    shutil.rmtree(tmp_path / "base")
    with pytest.raises(LmforgeError, match="LoRA adapter of the base model .* which is not there"):
        load_checkpoint(tmp_path / "lora")


def test_lora_fine_tuning_trains_the_adapters_and_head_and_predicts(tmp_path):
    data = encoder_base_and_rows(tmp_path)
    said = []
    report = finetune(tmp_path / "base", str(data), tmp_path / "run",
                      quick(lora_rank=8, lr=1e-2, epochs=12, dtype="float32"), log=said.append)
    assert report["lora"]["trainable"] < report["lora"]["total"] / 3 and any("LoRA rank 8" in s for s in said)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"lr"' in line]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5  # the adapters and the head learn
    assert report["test"]["accuracy"] > report["majority_baseline"]["accuracy"] + 0.2
    assert not (tmp_path / "run" / "model.safetensors").exists()
    from lmforge.train.predict import predict_file

    _, rep = predict_file(tmp_path / "run", str(data), tmp_path / "pred.jsonl")
    assert rep["accuracy"] > 0.7


@pytest.mark.parametrize("flags,named", [
    (["--lora-rank", "-1"], "--lora-rank"), (["--lora-rank", "4", "--lora-targets", "qkv,ffn"], "--lora-targets"),
    (["--lora-rank", "4", "--lora-dropout", "1.5"], "--lora-dropout"), (["--lora-rank", "4", "--lora-alpha", "0"],
                                                                        "--lora-alpha")])
def test_bad_lora_settings_name_their_flag_and_write_nothing(tmp_path, capsys, flags, named):
    data = encoder_base_and_rows(tmp_path)
    code = main(["finetune", str(tmp_path / "base"), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--epochs", "1", *flags])
    assert code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_lora_on_a_model_built_from_scratch_is_refused(tmp_path, capsys):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("en\tes\n" + "".join(f"a{i} b\tc{i} d\n" for i in range(40)), encoding="utf-8")
    code = main(["finetune", "t5-mini", "--task", "translate", "--data", str(pairs), "--source-column", "en",
                 "--target-column", "es", "--lora-rank", "4", "--out", str(tmp_path / "run")])
    assert code == 2 and "LoRA adapts a pretrained model" in capsys.readouterr().err


def test_a_stopped_lora_finetune_resumes_to_the_same_adapter(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from lmforge.tasks.classify import Classification

    data = encoder_base_and_rows(tmp_path)
    settings = quick(epochs=4, dtype="float32", lora_rank=4, lr=1e-2)
    full = finetune(tmp_path / "base", str(data), tmp_path / "full", settings, log=lambda *a: None)
    real, calls = Classification.loss, {"n": 0}

    def crashes_in_epoch_3(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(Classification, "loss", crashes_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path / "base", str(data), tmp_path / "run", settings, log=lambda *a: None)
    monkeypatch.setattr(Classification, "loss", real)
    resumed = finetune(tmp_path / "base", str(data), tmp_path / "run", settings, log=lambda *a: None, resume=True)
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == full["test"]
