"""The run recipe (YAML): its sections read, checked and merged with `--set` overrides; shipped
recipes by name; a corpus path resolved so that the saved recipe.yaml finds it from anywhere."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lmforge.config.fields import typed_fields
from lmforge.config.model import ModelConfig
from lmforge.config.presets import model_config_from_preset
from lmforge.config.sections import DataConfig, TaskConfig, TrainConfig
from lmforge.errors import LmforgeError


@dataclass
class Recipe:
    """Everything a run needs; saved as `recipe.yaml` beside every checkpoint. `task` is None for
    pretraining (no task: section is written), a TaskConfig for fine-tuning."""

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "gpt-mini"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig | None = None

    def model_config(self, vocab_size: int) -> ModelConfig:
        spec = dict(self.model)
        preset = spec.pop("preset", None)
        spec["vocab_size"] = vocab_size  # the tokenizer decides; a preset's vocabulary is a default only
        if preset is None:
            return ModelConfig.from_dict(spec)
        return model_config_from_preset(preset, **spec)

    def to_dict(self) -> dict[str, Any]:
        d = {"model": dict(self.model), "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}
        if self.task is not None:
            d["task"] = dataclasses.asdict(self.task)
        return d

    def get(self, key: str) -> Any:
        """The value of a dotted key (`train.lr`), or None where the recipe has no such section or key."""
        section, _, name = key.partition(".")
        part = getattr(self, section, None) if section in SECTIONS else None
        return part.get(name) if isinstance(part, dict) else getattr(part, name, None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        if not isinstance(d or {}, dict):
            raise LmforgeError("a recipe is a mapping with model, data, train (and task) sections, not "
                               f"{type(d).__name__} {str(d)[:40]!r}; fix the file")
        d = dict(d or {})
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise LmforgeError(f"unknown recipe section(s) {', '.join(sorted(unknown))}; a recipe has model, data, "
                               "train and task")
        if not isinstance(d.get("model") or {}, dict):
            raise LmforgeError("recipe section 'model' must be a mapping of key: value")
        model = dict(d.get("model") or {"preset": "gpt-mini"})
        allowed = {f.name for f in fields(ModelConfig)} | {"preset"}
        bad = set(model) - allowed
        if bad:
            raise LmforgeError(
                f"unknown recipe key model.{sorted(bad)[0]}; valid keys are {', '.join(sorted(allowed))}"
            )
        recipe = cls(
            model=model,
            data=DataConfig(**typed_fields(DataConfig, d.get("data") or {}, "data")),
            train=TrainConfig(**typed_fields(TrainConfig, d.get("train") or {}, "train")),
            task=TaskConfig(**typed_fields(TaskConfig, d["task"] or {}, "task")) if "task" in d else None,
        )
        recipe.train.validate()
        if recipe.task is not None:
            recipe.task.validate()
        return recipe

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = ("model", "data", "train", "task")


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """`["train.lr=3e-4", "model.n_layer=2"]` -> {"train": {"lr": "3e-4"}, "model": {"n_layer": 2}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise LmforgeError(f"--set {item!r} is not of the form section.key=value (e.g. train.lr=3e-4)")
        out.setdefault(section, {})[name] = yaml.safe_load(value) if value.strip() else None
    return out


def merge(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if not isinstance(base, dict) or any(not isinstance(v or {}, dict) for v in base.values()):
        return base  # not a recipe's shape: Recipe.from_dict says what is wrong
    merged = {k: dict(v or {}) for k, v in base.items()}
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    return merged


RECIPE_DIR = Path(__file__).parent.parent / "recipes"


def read_recipe(spec: str) -> tuple[dict[str, Any], Path]:
    """The raw mapping of a shipped recipe by name (`quickstart`) or a YAML file, and its path."""
    path = Path(spec)
    if not path.is_file():
        shipped = RECIPE_DIR / f"{spec}.yaml"
        if not shipped.is_file():
            names = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
            raise LmforgeError(f"recipe {spec!r} is neither a file nor a shipped recipe; use a path or one of {names}")
        path = shipped
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}, path
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LmforgeError(f"recipe {path} is not valid YAML ({str(e).splitlines()[0]}); fix the file") from None


def load_recipe(spec: str, overrides: list[str] | None = None, model: dict[str, Any] | None = None) -> Recipe:
    """A shipped recipe by name (`quickstart`), or a path to a YAML file; its model: section replaced by
    `model` when given (a distilled student's); then `--set` overrides."""
    raw, path = read_recipe(spec)
    if model is not None:
        raw = {**raw, "model": model}
    recipe = Recipe.from_dict(merge(raw, parse_set(overrides or [])))
    recipe.data.corpus = _resolve_corpus_path(recipe.data.corpus, path.parent)
    return recipe


# The corpora a recipe may name instead of giving a path (data/corpora.py describes, fetches and loads
# them, keyed by these names): here so that config knows a name from a path without importing data.
BUILTIN_CORPORA = ("shakespeare", "peoples-daily", "chinese-reviews", "bbc-news", "bible", "chitchat")


def _resolve_corpus_path(corpus: str, recipe_dir: Path) -> str:
    """A relative corpus path is taken from the working directory, else from the recipe's folder, and
    kept absolute, so that the run's recipe.yaml finds it from anywhere (eval, --resume). A built-in
    corpus name stays a name."""
    if not isinstance(corpus, str) or corpus in BUILTIN_CORPORA:
        return corpus
    here = Path(corpus).expanduser()
    if here.exists() or any(c in corpus for c in "*?["):
        return str(here.absolute()) if here.exists() else str(Path.cwd() / here)
    beside = recipe_dir / corpus
    return str(beside.absolute()) if "/" in corpus and beside.exists() else corpus
