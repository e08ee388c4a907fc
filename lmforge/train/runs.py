"""What every fine-tuning run shares, whatever its task: the base model, the recipe as the run trains
it (epochs turned into steps), the settings it reports, and the check that a resumed run keeps its
settings. finetune.py (labelled tasks) and seq2seq.py (translation, summarisation) both use them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from lmforge.checkpoint import is_checkpoint, load_pretrained
from lmforge.config import SHORTHANDS, Recipe, load_recipe, merge, parse_set, read_recipe
from lmforge.data.labelled import check_length, least_length
from lmforge.errors import LmforgeError
from lmforge.tasks import GENERATIVE
from lmforge.tokenizer import Tokenizer

# train.* keys a fine-tuning run works out from its task.* settings and the rows (not settings to compare)
DERIVED = ("max_steps", "warmup_steps", "eval_every", "log_every", "progress")


def finetune_recipe(spec: str | None = None, shorthands: dict | None = None,
                    overrides: list[str] | None = None) -> Recipe:
    """The shipped `finetune` recipe, under the recipe file `spec`, then the `shorthands` ({"lr": 1e-5}:
    names of SHORTHANDS), then `--set` overrides; checked, rows not yet read."""
    sets: dict = {}
    for name, value in (shorthands or {}).items():
        section, key = SHORTHANDS[name].split(".")
        sets.setdefault(section, {})[key] = value
    raw = read_recipe(spec)[0] if spec else {}
    if isinstance(raw, dict) and all(isinstance(v or {}, dict) for v in raw.values()):  # else from_dict says why
        top = merge(merge(raw, sets), parse_set(overrides or []))
        kind = (top.get("task") or {}).get("kind")
        defaults = read_recipe("finetune")[0]
        if kind in (*GENERATIVE, "chat"):  # translate.yaml / summarize.yaml / chat.yaml: their own rates and lengths
            defaults = merge(defaults, read_recipe(kind)[0])
        raw = merge(merge(merge(defaults, raw), sets), parse_set(overrides or []))
    recipe = Recipe.from_dict(raw)
    check_task(recipe)
    return recipe


def check_task(recipe: Recipe) -> None:
    """What a fine-tuning recipe needs beyond its sections' own checks."""
    t = recipe.task
    if t.max_length is not None:
        try:
            check_length(t.max_length, least_length(t.kind == "qa" or bool(t.text_pair_column)))
        except LmforgeError as e:
            raise e.about("task.max_length") from None


def load_base(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, Tokenizer]:
    """The encoder (or decoder) to fine-tune: an ELECTRA run gives its discriminator."""
    model, tokenizer = load_pretrained(path, device)
    if model.config.family == "electra":
        model = model.discriminator
    if model.config.head != "none":  # an already fine-tuned run: start again from its base
        model = model.base
    return model, tokenizer


def resolved(recipe: Recipe, model_config, n_train: int) -> Recipe:
    """The recipe as the run trains it: its model, and the steps its epochs come to over `n_train` rows."""
    t, train = recipe.task, recipe.train
    per_epoch = max(1, math.ceil(n_train / train.batch_size))
    steps = max(1, round(t.epochs * per_epoch))
    train = dataclasses.replace(train, max_steps=steps, warmup_steps=max(1, round(t.warmup_fraction * steps)),
                                eval_every=max(1, per_epoch // t.evals_per_epoch), log_every=max(1, min(10, per_epoch)))
    data = dataclasses.replace(recipe.data, corpus=str(t.data), column=t.text_column, clean=False)
    return dataclasses.replace(recipe, model=model_config.to_dict(), data=data, train=train)


def settings(recipe: Recipe) -> dict:
    """The settings of a fine-tuning run by their shorthand names (report.json's "config")."""
    return {name: recipe.get(key) for name, key in SHORTHANDS.items() if name not in ("base", "data")}


def _compared(recipe_or_old: Recipe | dict) -> dict:
    """{recipe key: value} of the settings a resumed run must keep: task.* and train.* less DERIVED."""
    if isinstance(recipe_or_old, dict):  # finetune.json of an earlier version: its shorthands
        old = {**recipe_or_old.get("config", {}), "base": recipe_or_old.get("base"), "data": recipe_or_old.get("data")}
        defaults = finetune_recipe(None, {"base": old["base"], "data": old["data"]})
        known = {SHORTHANDS[k]: v for k, v in old.items() if k in SHORTHANDS}
        return {**_compared(defaults), **{k: v for k, v in known.items() if k.split(".")[1] not in DERIVED}}
    d = recipe_or_old.to_dict()
    return {f"{section}.{k}": v for section in ("task", "train") for k, v in d[section].items() if k not in DERIVED}


def check_resume(out: Path, recipe: Recipe, resume: bool) -> None:
    """A new run never overwrites a checkpoint; a resumed one must have been started with these settings."""
    if not resume:
        if is_checkpoint(out):
            raise LmforgeError(f"{out} already holds a checkpoint; pass --resume to continue that fine-tuning run, "
                               "or choose another --out")
        return
    saved = _saved_settings(out)
    if saved is None or not is_checkpoint(out):
        raise LmforgeError(f"{out} holds no fine-tuning run to resume; run without --resume, or give the run with --out")
    mine = _compared(recipe)
    for key in sorted(set(mine) | set(saved)):
        if key in mine and key in saved and _differ(mine[key], saved[key]):
            raise LmforgeError(f"{out} was fine-tuned with another {{field}} ({saved[key]!r}); resume with the same "
                               "settings, or choose another run directory", key, mine[key])


def _differ(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return not math.isclose(a, b, rel_tol=1e-12)
    return str(a) != str(b) if a is not None and b is not None else a != b


def _saved_settings(out: Path) -> dict | None:
    """The settings a fine-tuning run in `out` was started with: its recipe.yaml (task: section), or the
    finetune.json an earlier version wrote."""
    if (out / "recipe.yaml").is_file():
        try:
            saved = load_recipe(str(out / "recipe.yaml"))
        except LmforgeError:
            saved = None
        if saved is not None and saved.task is not None:
            return _compared(saved)
    try:
        old = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _compared(old) if isinstance(old, dict) and isinstance(old.get("config"), dict) else None
