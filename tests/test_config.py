"""Recipes: shipped ones load, --set overrides with types, and every wrong key is a clear error."""

import json
import re

import pytest

from lmforge.config import Recipe, load_recipe, parse_set
from lmforge.errors import LmforgeError
from lmforge.train.schedule import lr_at


def test_shipped_recipes_load():
    r = load_recipe("shakespeare-char")
    assert r.data.tokenizer == "char" and r.train.max_steps == 2000
    cfg = r.model_config(vocab_size=72)
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.context_length) == (4, 4, 128, 64)
    assert load_recipe("quickstart").data.corpus == "shakespeare"


def test_set_overrides_are_typed():
    r = load_recipe("quickstart", ["train.lr=3e-4", "model.n_layer=2", "train.progress=false", "data.column=body"])
    assert r.train.lr == 3e-4 and r.model["n_layer"] == 2 and r.train.progress is False
    assert r.data.column == "body"


@pytest.mark.parametrize("sets,match", [
    (["train.lrr=1"], "unknown recipe key train.lrr"),
    (["model.layers=2"], "unknown recipe key model.layers"),
    (["optim.lr=1"], "unknown recipe section"),
    (["train.max_steps=abc"], "not a valid int"),
    (["train.lr"], "section.key=value"),
    (["train.schedule=exp"], "cosine, linear or constant"),
])
def test_bad_keys_and_values(sets, match):
    with pytest.raises(LmforgeError, match=match):
        load_recipe("quickstart", sets)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(LmforgeError, match="neither a file nor a shipped recipe"):
        load_recipe("no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(LmforgeError, match="not valid YAML"):
        load_recipe(str(bad))


def test_parse_set_nests():
    assert parse_set(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_recipe_round_trip(tmp_path):
    r = load_recipe("quickstart")
    r.save(tmp_path / "r.yaml")
    assert Recipe.from_dict(__import__("yaml").safe_load((tmp_path / "r.yaml").read_text())).to_dict() == r.to_dict()


def test_schedules_by_hand():
    kw = dict(lr=1.0, min_lr=0.1, warmup=10, total=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # cosine halfway: 0.1 + 0.9 * 0.5
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(60, **kw, kind="linear") == pytest.approx(0.55)
    assert lr_at(35, **kw, kind="linear") == pytest.approx(1.0 - 0.9 * 0.25)
    assert lr_at(100, **kw, kind="constant") == 1.0


@pytest.mark.parametrize("sets, words", [
    (["data.corpus="], "data.corpus needs a value"),
    (["train.lr=nan"], "train.lr='nan' is not a valid float"),
    (["train.batch_size=yes"], "train.batch_size=True is not a valid int"),
    (["train.warmup_steps=-5"], "train.warmup_steps=-5 cannot be used; give 0 or more"),
    (["train.time_limit_minutes=-1"], "train.time_limit_minutes=-1.0 cannot be used; give 0 or more"),
    (["data.corpus=[a, b]"], "data.corpus=['a', 'b'] is not a valid str"),
])
def test_bad_set_values_are_one_sentence(sets, words):
    with pytest.raises(LmforgeError, match=re.escape(words)):
        load_recipe("quickstart", sets)


@pytest.mark.parametrize("text, words", [("- a\n", "a recipe is a mapping"), ("model: 5\n", "section 'model' must be"),
                                         ("train: 3\n", "section 'train' must be"),
                                         ("data: {corpus: [a.txt, b.txt]}\n", "data.corpus=")])
def test_recipe_files_of_the_wrong_shape_are_one_sentence(text, words, tmp_path):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(LmforgeError, match=re.escape(words)):
        load_recipe(str(tmp_path / "r.yaml"))


def test_a_folder_named_like_a_number_is_a_corpus_path():
    assert load_recipe("quickstart", ["data.corpus=2024"]).data.corpus == "2024"


def test_recipes_and_set_keep_converting_text_but_refuse_absurd_model_sizes():
    # YAML reads 1e-6 (no dot) as text: a recipe or --set converts it, as before
    assert load_recipe("quickstart", ["model.norm_eps=1e-6"]).model_config(100).norm_eps == 1e-6
    for item, words in [("model.n_layer=1000000", "model.n_layer=1000000 must be between 1 and 4,096"),
                        ("model.norm_eps=0", "model.norm_eps=0.0 must be positive"),
                        ("model.n_kv_head=0", "model.n_kv_head=0 must be between 1")]:
        with pytest.raises(LmforgeError, match=re.escape(words)):
            load_recipe("quickstart", [item]).model_config(100)


@pytest.mark.parametrize("change, words", [
    ({"n_layer": "4"}, "model.n_layer='4' is text where a number belongs"),
    ({"bias": "true"}, "model.bias='true' is text where a switch belongs"),
    ({"rope_theta": -1.0}, "model.rope_theta=-1.0 must be positive"),
    ({"init_std": float("nan")}, "model.init_std=nan"),
    ({"labels": "ab"}, "model.labels='ab' must be a list"),
])
def test_a_config_json_is_read_as_written(change, words, tmp_path):
    from lmforge.config import ModelConfig

    ModelConfig().save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == ModelConfig()
    (tmp_path / "config.json").write_text(json.dumps({**ModelConfig().to_dict(), **change}))
    with pytest.raises(LmforgeError, match=re.escape(words)):
        ModelConfig.load(tmp_path / "config.json")
