"""Pretraining from a recipe: its data prepared, its model built, its objective as a task.

    recipe -> objective (train.objective, or the model family's own) -> token data -> model + task

An encoder-decoder model pretrains with T5's span corruption (objective span) on windows of the
token stream; its tokenizer needs sentinel tokens (data.sentinels, e.g. 100: the t5-pretrain recipe).

`pretrainer(recipe, run_dir)` gives the Trainer that `lmforge train` and the quick start run; a
resumed run reads the tokenizer it saved, so its token shards are the ones it trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.config import Recipe
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.tasks.pretrain import pretraining_task
from lmforge.tokenizer import Tokenizer
from lmforge.runtime import pick_device
from lmforge.train.parallel import main_first, start_world
from lmforge.train.trainer import Trainer

OBJECTIVES = {"gpt": ("clm",), "bert": ("mlm+nsp", "mlm"), "electra": ("rtd",), "seq2seq": ("span", "denoise")}


def objective_for(recipe: Recipe, family: str) -> str:
    """The recipe's train.objective, or the family's own ("auto"); a mismatch is a clear error."""
    allowed = OBJECTIVES[family]
    name = recipe.train.objective
    if name == "auto":
        return allowed[0]
    if name not in allowed:
        raise LmforgeError(f"{{setting}} does not train a {family} model; use one of {', '.join(allowed)} (or auto)",
                           "train.objective", name)
    return name


def prepare_data(recipe: Recipe, objective: str, tokenizer=None, log=print):
    """Token data for an objective: a token stream (clm, span, denoise) or documents cut into sentences (encoders)."""
    if objective in ("clm", "span", "denoise"):
        from lmforge.data.shards import prepare

        return prepare(recipe.data, tokenizer=tokenizer, log=log)
    from lmforge.data.encoder import prepare_encoder

    return prepare_encoder(recipe.data, tokenizer=tokenizer, log=log, whole_word=recipe.train.whole_word_mask or None)


def build_pretraining(recipe: Recipe, run_dir: str | Path, resume: bool = False, log=print):
    """(model, task) of a pretraining recipe; the weights are seeded with train.seed."""
    if recipe.task is not None:
        raise LmforgeError("this recipe fine-tunes (it has a task: section); run it with `lmforge finetune --recipe "
                           "FILE`, or drop the task: section to pretrain")
    objective = objective_for(recipe, recipe.model_config(1).family)
    tokenizer = Tokenizer.load(Path(run_dir) / "tokenizer.json") if resume else None
    with main_first():  # with torchrun: process 0 tokenises and writes the shards, the others then read them
        data = prepare_data(recipe, objective, tokenizer, log)
    model_config = recipe.model_config(data.tokenizer.vocab_size)
    if model_config.family == "seq2seq":  # T5's convention: the decoder starts from the padding token
        model_config.decoder_start_id = data.tokenizer.pad_id or 0
    torch.manual_seed(recipe.train.seed)
    model = build_model(model_config)
    return model, pretraining_task(recipe, objective, data, model_config)


def pretrainer(recipe: Recipe, run_dir: str | Path, resume: bool = False, log=print) -> Trainer:
    """The Trainer of a pretraining run: built from `recipe`, saving it as recipe.yaml."""
    if resume:  # fail early, before the data is prepared, if the run cannot resume
        from lmforge.checkpoint import load_trainer_state

        load_trainer_state(Path(run_dir))
    start_world(pick_device(recipe.train.device, "--set train.device=cpu"))  # with torchrun: join its processes
    torch.manual_seed(recipe.train.seed)
    model, task = build_pretraining(recipe, run_dir, resume, log)
    return Trainer(model, task, recipe.train, run_dir, recipe=recipe, resume=resume, log=log)
