"""`lmforge distill --teacher RUN --student-preset P [--temperature 2] [--alpha 0.5] --out`: a smaller
student trained on the teacher's own data, against the teacher's distributions (objectives/distill.py).

- A pretrained GPT teaches next-token distributions: the student pretrains on the teacher's corpus
  (its recipe.yaml: data, batch, steps, learning rate), with the teacher's tokenizer and context.
- A fine-tuned classifier teaches its class distributions: the student fine-tunes on the same rows,
  split the same way (the teacher's task: section), and is scored on the same test split.

The student is a preset (built fresh with the teacher's tokenizer) or a run directory whose
tokenizer is the teacher's: the two distributions are compared token by token, so the vocabularies
must be one. `--alpha 0` trains the same student on the labels alone: the control.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lmforge.checkpoint import load_pretrained
from lmforge.config import PRESETS, load_recipe
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.tasks.distill import Distilled


def check_settings(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise LmforgeError(f"--temperature {temperature} must be above 0 (1 is the plain softmax; 2 is usual)")
    if not 0 <= alpha <= 1:
        raise LmforgeError(f"--alpha {alpha} must be between 0 (labels only) and 1 (the teacher only)")


def student_spec(student: str, teacher, tokenizer) -> tuple[dict, torch.nn.Module | None]:
    """The student's model: section, and its model when it starts from a run."""
    if Path(student).is_dir():
        from lmforge.train.runs import load_base

        model, own = load_base(student)
        if own.hf.get_vocab() != tokenizer.hf.get_vocab():
            raise LmforgeError(f"the student {student} has another tokenizer ({own.vocab_size:,} tokens) than the teacher "
                               f"({tokenizer.vocab_size:,}); distillation compares their distributions token by token, "
                               "so the vocabularies must match: start the student from a preset, which takes the "
                               "teacher's tokenizer")
        return {k: v for k, v in model.config.to_dict().items() if k != "vocab_size"}, model
    if student not in PRESETS:
        raise LmforgeError(f"--student-preset {student} is neither a preset ({', '.join(PRESETS)}) nor a run directory")
    return {"preset": student, "context_length": teacher.config.context_length}, None


def distill_run(teacher_run: str | Path, out: str | Path, student: str, temperature: float = 2.0, alpha: float = 0.5,
                sets: list[str] | None = None, log=print) -> dict:
    """Train `student` from `teacher_run` into `out`; the report."""
    from lmforge.train.trainer import held_run_dir

    check_settings(temperature, alpha)
    teacher_run, out = Path(teacher_run), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"{out} exists and is not empty; give a new directory for the student")
    if not (teacher_run / "recipe.yaml").is_file():
        raise LmforgeError(f"the teacher {teacher_run} has no recipe.yaml naming its data; give an lmforge run the "
                           "teacher was trained or fine-tuned in")
    teacher, tokenizer = load_pretrained(teacher_run)
    spec, model = student_spec(student, teacher, tokenizer)
    recipe = load_recipe(str(teacher_run / "recipe.yaml"), sets, model=spec)
    common = {"teacher": str(teacher_run), "student": student, "temperature": temperature, "alpha": alpha,
              "teacher_parameters": teacher.num_params()}
    if recipe.task is None:
        with held_run_dir(out, "lmforge distill"):
            report = _language_model(teacher, tokenizer, model, recipe, out, temperature, alpha, log)
    elif recipe.task.kind == "classify":  # fine-tuning holds the run directory itself
        report = _classifier(teacher, tokenizer, model, recipe, out, temperature, alpha, log)
    else:
        raise LmforgeError(f"the teacher is fine-tuned for {recipe.task.kind!r}; distill pretrained GPTs and classifiers")
    return {**common, **report}


def _language_model(teacher, tokenizer, model, recipe, out: Path, temperature: float, alpha: float, log) -> dict:
    from lmforge.tasks.pretrain import pretraining_task
    from lmforge.train.pretrain import prepare_data
    from lmforge.train.trainer import Trainer

    cfg = model.config if model is not None else recipe.model_config(teacher.config.vocab_size)
    if teacher.config.family != "gpt" or cfg.family != "gpt":
        raise LmforgeError("a pretrained teacher teaches next-token distributions: teacher and student must both be "
                           f"GPTs (here {teacher.config.family} and {cfg.family})")
    if cfg.context_length > teacher.config.context_length:
        raise LmforgeError(f"the student reads {cfg.context_length} tokens at a time, more than the teacher's "
                           f"{teacher.config.context_length}; give it --set model.context_length="
                           f"{teacher.config.context_length} or less")
    data = prepare_data(recipe, "clm", tokenizer, log)
    torch.manual_seed(recipe.train.seed)
    model = model if model is not None else build_model(cfg)
    recipe = dataclasses.replace(recipe, model={k: v for k, v in cfg.to_dict().items() if k != "vocab_size"})
    task = pretraining_task(recipe, "clm", data, cfg)
    result = Trainer(model, Distilled(task, teacher, temperature, alpha), recipe.train, out, recipe=recipe,
                     log=log).fit()
    last = result.evals[-1]
    taught = task.evaluate(teacher, full=True)  # as the student's last evaluation: the whole validation split
    return {"kind": "language model", "steps": result.steps, "seconds": round(result.seconds, 1),
            "student_parameters": model.num_params(), "validation": {k: v for k, v in last.items() if k != "step"},
            "teacher_validation": taught}


def _classifier(teacher, tokenizer, model, recipe, out: Path, temperature: float, alpha: float, log) -> dict:
    from lmforge.train.finetune import Inputs, finetune_run
    from lmforge.tasks import task_class

    t = dataclasses.replace(recipe.task, lora_rank=0)  # the student trains in full
    if model is None:
        torch.manual_seed(recipe.train.seed)
        model = build_model(dataclasses.replace(recipe.model_config(teacher.config.vocab_size), head="none", labels=[]))
    inputs = Inputs(model, tokenizer, task_class(t.kind).read(t.data, t))
    recipe = dataclasses.replace(recipe, task=t)
    labels = inputs.task(recipe).labels
    if list(labels) != list(teacher.config.labels):
        raise LmforgeError(f"the rows' classes ({', '.join(labels)}) are not the teacher's "
                           f"({', '.join(teacher.config.labels)}); distil on the rows the teacher was fine-tuned on")
    report = finetune_run(recipe, out, log, inputs=inputs,
                          wrap=lambda task: Distilled(task, teacher, temperature, alpha))
    return {"kind": "classifier", "student_parameters": model.num_params(), **report}
