"""Configuration: one `ModelConfig` for every model family, named presets, and the run recipe.

A recipe (YAML) has up to four sections, each a dataclass below:

    model: {preset: gpt-mini, n_layer: 4, ...}   # a preset plus field overrides -> ModelConfig
    data:  {corpus: shakespeare, tokenizer: bpe, vocab_size: 4096, ...}        -> DataConfig
    train: {max_steps: 2000, lr: 1e-3, batch_size: 12, ...}                    -> TrainConfig
    task:  {kind: classify, base: RUN, data: rows.csv, epochs: 3, ...}         -> TaskConfig (fine-tuning)

Pretraining and fine-tuning read the same Recipe: a fine-tuning recipe starts from the shipped
`finetune` recipe (its train: defaults suit fine-tuning) and its run saves the whole recipe as
recipe.yaml. `lmforge train --set train.lr=3e-4 --set model.n_layer=2` overrides any field by its
dotted name; `lmforge finetune --lr 1e-5` is a shorthand for `--set train.lr=1e-5` (SHORTHANDS).
Unknown keys are errors that list the valid ones, so a typo never silently does nothing. An error
about one value carries its key as `LmforgeError.field`, so each front door names it its own way.
"""

from lmforge.config.fields import auto_or_bool
from lmforge.config.model import ModelConfig
from lmforge.config.presets import PRESETS, model_config_from_preset
from lmforge.config.recipe import (BUILTIN_CORPORA, RECIPE_DIR, SECTIONS, Recipe, load_recipe, merge, parse_set,
                                   read_recipe)
from lmforge.config.sections import SHORTHANDS, TRAINABLE, DataConfig, GenerateConfig, TaskConfig, TrainConfig

__all__ = ["BUILTIN_CORPORA", "PRESETS", "RECIPE_DIR", "SECTIONS", "SHORTHANDS", "TRAINABLE", "DataConfig",
           "GenerateConfig", "ModelConfig", "Recipe", "TaskConfig", "TrainConfig", "auto_or_bool", "load_recipe",
           "merge", "model_config_from_preset", "parse_set", "read_recipe"]
