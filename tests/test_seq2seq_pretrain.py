"""T5-style pretraining from a recipe: span corruption of the token stream, the loss falls, a resumed
run continues with the same batches, and a tokenizer without sentinels is one clear error."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.config import load_recipe
from lmforge.errors import LmforgeError
from lmforge.train.pretrain import pretrainer

TINY = ["model.n_layer=2", "model.n_decoder_layer=2", "model.d_model=64", "model.n_head=4", "model.d_ff=128",
        "model.context_length=48", "model.dropout=0.0", "data.vocab_size=512", "data.sentinels=20",
        "train.batch_size=8", "train.eval_batches=2", "train.dtype=float32", "train.warmup_steps=5", "train.lr=3e-3"]


def sets(items):
    return [x for item in items for x in ("--set", item)]


def test_span_corruption_pretraining_learns_and_resumes_exactly(tmp_path, small_corpus):
    common = [*TINY, f"data.corpus={small_corpus}", "train.eval_every=20", "train.schedule=constant"]  # lr apart from max_steps
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "--recipe", "t5-pretrain", "--out", str(full), "--json",
                 *sets([*common, "train.max_steps=60"])]) == 0
    evals = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    assert evals[-1]["val_loss"] < 0.7 * evals[0]["val_loss"]
    recipe = load_recipe(str(full / "recipe.yaml"))
    assert recipe.train.objective == "span" and recipe.data.sentinels == 20
    assert main(["train", "--recipe", "t5-pretrain", "--out", str(part), *sets([*common, "train.max_steps=40"])]) == 0
    assert main(["train", "--out", str(part), "--resume", *sets(["train.max_steps=60"])]) == 0
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run saw other batches than the whole one"


def test_a_tokenizer_without_sentinels_is_refused(tmp_path, small_corpus):
    recipe = load_recipe("t5-pretrain", [*TINY, f"data.corpus={small_corpus}", "data.sentinels=0"])
    with pytest.raises(LmforgeError, match="data.sentinels"):
        pretrainer(recipe, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_bart_denoising_pretraining_learns(tmp_path, small_corpus):
    tiny = [x for x in TINY if not x.startswith("data.sentinels")]
    out = tmp_path / "bart"
    assert main(["train", "--recipe", "bart-pretrain", "--out", str(out), "--json",
                 *sets([*tiny, f"data.corpus={small_corpus}", "train.eval_every=20", "train.max_steps=60"])]) == 0
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    assert evals[-1]["val_loss"] < 0.85 * evals[0]["val_loss"]  # it writes the whole window back: slower than span
    recipe = load_recipe(str(out / "recipe.yaml"))
    assert recipe.train.objective == "denoise" and recipe.model["preset"] == "bart-mini"


def test_sentence_ends_and_one_denoised_window():
    import numpy as np

    from lmforge.data.spans import bart_denoise, sentence_end_ids
    from lmforge.tokenizer import train_bpe

    tok = train_bpe(["One day. Then two! And three? " * 50, "\u4e00\u53e5\u3002" * 20], 300)
    ends = set(sentence_end_ids(tok))
    assert {tok.encode(".")[0], tok.encode("!")[0], tok.encode("?")[0]} <= ends
    assert tok.encode(" day")[0] not in ends and not ends & tok.special_ids
    ids = tok.encode("One day. Then two! And three?")
    noisy, target = bart_denoise(ids, tok.mask_id, np.random.default_rng(0), 0.3, 3.0, ends, tok.eos_id)
    assert target == ids + [tok.eos_id] and tok.mask_id in noisy and noisy[-1] == tok.eos_id
