"""A short recovery: a few steps of the run's own pretraining on its own text after pruning.

Pruning moves the model away from the weights it trained to; a few hundred steps of the same objective
let the weights that remain make up for the ones that went. The masks stay: a zeroed weight's gradient
is multiplied by its mask (0), so AdamW's moments for it stay 0 and its update is 0; weight decay
shrinks 0 to 0. Structured pruning leaves no mask: the smaller model simply trains.

The schedule is the run's own (its recipe.yaml: data, batch, optimiser) at a tenth of its learning
rate, warmed up over the first tenth of the steps: the model is already trained, and a full learning
rate would undo more than pruning did.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.tokenizer import Tokenizer

LR_FACTOR = 0.1


def check_recovery(run: str | Path, steps: int) -> None:
    """Refuse, before anything is pruned or written, a recovery that cannot run."""
    from lmforge.config import load_recipe

    if steps < 0:
        raise LmforgeError(f"--recover-steps {steps} must be 0 or more")
    recipe_file = Path(run) / "recipe.yaml"
    if steps and not recipe_file.is_file():
        raise LmforgeError(f"--recover-steps trains on the run's own text, and {run} has no recipe.yaml naming it; "
                           "leave --recover-steps out")
    task = load_recipe(str(recipe_file)).task if steps else None
    if task is not None:
        raise LmforgeError(f"--recover-steps continues pretraining, and {run} is fine-tuned for {task.kind!r}; "
                           "prune its pretrained base and fine-tune the pruned one, or leave --recover-steps out")


def recover(model: nn.Module, run: str | Path, out: str | Path, steps: int,
            masks: dict[str, torch.Tensor] | None = None, log=lambda *a: None) -> dict:
    """Train the pruned `model` for `steps` steps of `run`'s pretraining into `out` (a new run there);
    validation loss before and after. check_recovery(run, steps) says first whether it can."""
    from lmforge.config import load_recipe
    from lmforge.tasks.pretrain import pretraining_task
    from lmforge.train.pretrain import objective_for, prepare_data
    from lmforge.train.trainer import Trainer

    check_recovery(run, steps)
    recipe = load_recipe(str(Path(run) / "recipe.yaml"))
    t = recipe.train
    train = dataclasses.replace(t, max_steps=steps, lr=t.lr * LR_FACTOR, min_lr=t.min_lr * LR_FACTOR,
                                warmup_steps=max(1, steps // 10), eval_every=steps, save_every=0, time_limit_minutes=0.0,
                                patience=0, keep_best=False, progress=False)
    config = {k: v for k, v in model.config.to_dict().items() if k != "vocab_size"}  # the model as it now is
    recipe = dataclasses.replace(recipe, model=config, train=train)
    objective = objective_for(recipe, model.config.family)
    tokenizer = Tokenizer.load(Path(run) / "tokenizer.json")
    data = prepare_data(recipe, objective, tokenizer, log)
    task = pretraining_task(recipe, objective, data, model.config)
    handles = [model.get_submodule(name).weight.register_hook(lambda g, m=mask: g * m.to(g.dtype))
               for name, mask in (masks or {}).items()]
    try:
        result = Trainer(model.train(), task, train, out, recipe=recipe, log=log).fit()
    finally:
        for h in handles:
            h.remove()
    first, last = result.evals[0], result.evals[-1]
    return {"steps": result.steps, "val_loss_before": first["loss"], "val_loss_after": last["loss"],
            "seconds": round(result.seconds, 1)}
