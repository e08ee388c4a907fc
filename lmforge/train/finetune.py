"""Fine-tuning a pretrained model on labelled rows, with an honest evaluation.

    lmforge finetune BASE --task classify --data FILE --text-column text --label-column label --out RUN
    lmforge finetune --recipe FILE.yaml [--set task.epochs=5 ...]

BASE (task.base) is an lmforge run (GPT, BERT or ELECTRA: its discriminator) or a Hugging Face
directory. The rows are split once, stratified by label and seeded: train (fits the weights),
validation (picks the epoch: early stopping and the kept checkpoint) and test (scored once, at the
end, by the kept checkpoint). The loop is the pretraining loop (train/trainer.py); the task
(lmforge/tasks/) reads, batches, scores and predicts. The run's recipe.yaml is the whole recipe,
with the steps its epochs came to; a resumed run must be given the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.config import SHORTHANDS, Recipe, load_recipe, merge, parse_set, read_recipe
from lmforge.data.labelled import check_length, least_length
from lmforge.errors import Diverged, LmforgeError
from lmforge.evaluate.classification import plot_confusion_matrix
from lmforge.evaluate.crossval import stratified_kfold, stratified_split, summarize_folds
from lmforge.io import write_json
from lmforge.models import build_model
from lmforge.tasks import task_class
from lmforge.tokenizer import Tokenizer
from lmforge.checkpoint import is_checkpoint, load_checkpoint, load_pretrained
from lmforge.train.trainer import Trainer, held_run_dir

# train.* keys a fine-tuning run works out from its task.* settings and the rows (not settings to compare)
DERIVED = ("max_steps", "warmup_steps", "eval_every", "log_every", "progress")
ADVICE = "lower lr (e.g. FinetuneConfig(lr=1e-5)) and start again with another out directory"  # to Python callers


@dataclass
class FinetuneConfig:
    """The Python front door to a fine-tuning recipe: each argument is the recipe key SHORTHANDS names
    (lr -> train.lr, epochs -> task.epochs); None keeps the shipped `finetune` recipe's value."""

    task: str | None = None  # classify | token | qa
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    question_column: str | None = None
    context_column: str | None = None
    answer_column: str | None = None
    doc_stride: int | None = None
    tokens_column: str | None = None
    tags_column: str | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    max_length: int | None = None
    truncation: str | None = None
    class_weights: bool | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup_fraction: float | None = None
    weight_decay: float | None = None
    evals_per_epoch: int | None = None
    patience: int | None = None
    metric: str | None = None
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    compile: str | bool | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        self.recipe()  # refuse a bad setting now, before any work

    def recipe(self, base=None, data=None, recipe: str | None = None) -> Recipe:
        """The fine-tuning recipe these arguments make (over the recipe file `recipe`, when given);
        an error names the argument (`lr`), not the recipe key."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        given.update({k: str(v) for k, v in (("base", base), ("data", data)) if v is not None})
        return named(lambda: finetune_recipe(recipe, given), {key: name for name, key in SHORTHANDS.items()})


def named(build, names: dict[str, str], advice: str | None = None):
    """build(), with an error about a recipe key renamed as `names` says (key -> a front door's name),
    and a diverged run given `advice`."""
    try:
        return build()
    except Diverged as e:
        raise (e.advise(advice) if advice else e) from None
    except LmforgeError as e:
        if e.field in names:
            raise e.named(names[e.field]) from None
        raise


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
        raw = merge(merge(merge(read_recipe("finetune")[0], raw), sets), parse_set(overrides or []))
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


# ------------------------------------------------------------------------------------------ inputs


def load_base(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, Tokenizer]:
    """The encoder (or decoder) to fine-tune: an ELECTRA run gives its discriminator."""
    model, tokenizer = load_pretrained(path, device)
    if model.config.family == "electra":
        model = model.discriminator
    if model.config.head != "none":  # an already fine-tuned run: start again from its base
        model = model.base
    return model, tokenizer


@dataclass
class Inputs:
    """What a fine-tuning run reads before it trains: the base model, its tokenizer, the task's rows."""

    base: torch.nn.Module
    tokenizer: Tokenizer
    rows: dict

    def task(self, recipe: Recipe):
        """A fresh task over these rows (its classes found, its row length fitted to the base)."""
        t = recipe.task
        cls = task_class(t.kind)
        context = self.base.config.context_length
        max_len = context if t.max_length is None else min(t.max_length, context)
        task = cls(t, recipe.train, self.tokenizer, cls.classes(self.rows), self.rows, not self.base.config.causal,
                   max_len)
        if hasattr(task, "check"):
            task.check()
        return task


def read_inputs(recipe: Recipe) -> Inputs:
    t = recipe.task
    for key, value in (("task.base", t.base), ("task.data", t.data)):
        if not value:
            raise LmforgeError("fine-tuning needs {field}: give the model to fine-tune and the labelled rows", key)
    base, tokenizer = load_base(t.base)
    return Inputs(base, tokenizer, task_class(t.kind).read(t.data, t))


def resolved(recipe: Recipe, model_config, n_train: int) -> Recipe:
    """The recipe as the run trains it: its model, and the steps its epochs come to over `n_train` rows."""
    t, train = recipe.task, recipe.train
    per_epoch = max(1, math.ceil(n_train / train.batch_size))
    steps = max(1, round(t.epochs * per_epoch))
    train = dataclasses.replace(train, max_steps=steps, warmup_steps=max(1, round(t.warmup_fraction * steps)),
                                eval_every=max(1, per_epoch // t.evals_per_epoch), log_every=max(1, min(10, per_epoch)))
    data = dataclasses.replace(recipe.data, corpus=str(t.data), column=t.text_column, clean=False)
    return dataclasses.replace(recipe, model=model_config.to_dict(), data=data, train=train)


# ------------------------------------------------------------------------------------------ running


def _task_model(base: torch.nn.Module, head: str, labels: list[str]) -> torch.nn.Module:
    cfg = dataclasses.replace(base.config, head=head, labels=labels)
    model = build_model(cfg)
    model.base.load_state_dict(base.state_dict())
    return model


def train_and_test(inputs: Inputs, split: tuple, recipe: Recipe, out: Path, log=print, resume: bool = False) -> dict:
    """Fine-tune on split[0], keep the best on split[1], score split[2] once: the report (a dict)."""
    task = inputs.task(recipe)
    parts = [task.encode(idx, inputs.tokenizer) for idx in split]
    cut = sum(p[0].truncated for p in parts)
    if cut:
        log(task.truncation_note(cut, len(next(iter(inputs.rows.values())))))
    task.fit_on(parts[0], parts[1])
    seed = recipe.train.seed
    torch.manual_seed(seed)  # the new head's initial weights: the same for the same seed, in any process
    model = _task_model(inputs.base, task.kind, task.labels)
    run = resolved(recipe, model.config, len(parts[0][0]))
    torch.manual_seed(seed)
    trainer = Trainer(model, task, run.train, out, recipe=run, resume=resume, log=log)
    result = trainer.fit()
    best, _ = load_checkpoint(out, trainer.device)  # the kept (best-on-validation) weights
    report: dict = {"task": task.kind, "base_params": inputs.base.num_params(), "train_rows": len(split[0]),
                    "validation_rows": len(split[1]), "test_rows": len(split[2]), "truncated": cut,
                    "steps": result.steps, "seconds": round(result.seconds, 1),
                    "best_validation": {k: v for k, v in (result.best or {}).items() if k != "report"}}
    report.update(task.test(best, parts[2], split[0], trainer.autocast))
    return report


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


def finetune_run(recipe: Recipe, out: str | Path, log=print, resume: bool = False) -> dict:
    """`lmforge finetune`: split, fine-tune, keep the best, score the test split; report.json beside the
    run. resume: continue a run that was stopped, from its last kept checkpoint, with its settings."""
    out, t = Path(out), recipe.task
    with held_run_dir(out, "lmforge finetune"):
        check_resume(out, recipe, resume)
        inputs = read_inputs(recipe)
        task = inputs.task(recipe)
        fractions = (1 - t.val_fraction - t.test_fraction, t.val_fraction, t.test_fraction)
        split = stratified_split(task.stratify_by(), fractions, seed=recipe.train.seed)
        report = train_and_test(inputs, split, recipe, out, log, resume)
        report.update(base=str(t.base), data=str(t.data), config=settings(recipe))
        if t.kind != "qa":
            plot_confusion_matrix(report["test"], out / "confusion.png", title=f"{Path(t.data).name}: test split")
        write_json(out / "report.json", report)
    return report


def cross_validate_run(recipe: Recipe, out: str | Path, folds: int = 5, log=print) -> dict:
    """`lmforge cv`: k folds (stratified by label for classify); each is the test split once, while the
    other k - 1 train (a validation part of them picks the epoch). Mean and standard deviation over
    the folds of the task's test figures: accuracy and macro F1 (token: also entity F1 for BIO
    tags), or exact match and F1 (qa). An `out` that holds a cross-validation already is refused."""
    if folds < 2:
        raise LmforgeError("{setting} cannot cross-validate; use 2 or more (5 is usual)", "folds", folds)
    out, t = Path(out), recipe.task
    with held_run_dir(out, "lmforge cv"):
        if (out / "cv.json").exists() or any(is_checkpoint(fold) for fold in out.glob("fold-*")):
            raise LmforgeError(f"{out} already holds a cross-validation, which this one would overwrite; choose "
                               "another --out, or remove that one first")
        inputs = read_inputs(recipe)
        task = inputs.task(recipe)
        key, per_fold = task.stratify_by(), []
        for k, (train_all, test_idx) in enumerate(stratified_kfold(key, folds, seed=recipe.train.seed)):
            val_share = t.val_fraction / (1 - 1 / folds)
            tr, va = stratified_split([key[i] for i in train_all], (1 - val_share, val_share), seed=recipe.train.seed + k)
            log(f"fold {k + 1}/{folds}: {len(tr)} train, {len(va)} validation, {len(test_idx)} test")
            report = train_and_test(inputs, (train_all[tr], train_all[va], test_idx), recipe, out / f"fold-{k + 1}", log)
            write_json(out / f"fold-{k + 1}" / "report.json", report)
            per_fold.append(task.fold_scores(report["test"]))
        summary = {"folds": folds, "base": str(t.base), "data": str(t.data), **summarize_folds(per_fold)}
        write_json(out / "cv.json", summary)
    return summary


# ------------------------------------------------------------------------------------------ Python calls
PYTHON_NAMES = {key: name for name, key in SHORTHANDS.items()}


def finetune(base_path: str | Path, data: str, out: str | Path, cfg: FinetuneConfig | None = None, log=print,
             resume: bool = False) -> dict:
    """Fine-tune `base_path` on the rows in `data` into `out` with the settings `cfg` (see finetune_run)."""
    recipe = (cfg or FinetuneConfig()).recipe(base_path, data)
    return named(lambda: finetune_run(recipe, out, log, resume), PYTHON_NAMES, ADVICE)


def cross_validate(base_path: str | Path, data: str, out: str | Path, cfg: FinetuneConfig | None = None,
                   folds: int = 5, log=print) -> dict:
    """k-fold cross-validation of fine-tuning `base_path` on `data` (see cross_validate_run)."""
    recipe = (cfg or FinetuneConfig()).recipe(base_path, data)
    return named(lambda: cross_validate_run(recipe, out, folds, log), PYTHON_NAMES, ADVICE)
