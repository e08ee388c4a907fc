"""Fine-tuning a pretrained model on labelled rows, with an honest evaluation.

    lmforge finetune BASE --task classify --data FILE --text-column text --label-column label --out RUN
    lmforge finetune --recipe FILE.yaml [--set task.epochs=5 ...]

BASE (task.base) is an lmforge run (GPT, BERT or ELECTRA: its discriminator) or a Hugging Face
directory. The rows are split once, stratified by label and seeded: train (fits the weights),
validation (picks the epoch: early stopping and the kept checkpoint) and test (scored once, at the
end, by the kept checkpoint). The loop is the pretraining loop (train/trainer.py); the task
(lmforge/tasks/) reads, batches, scores and predicts. The run's recipe.yaml is the whole recipe,
with the steps its epochs came to; a resumed run must be given the same settings. Translation and
summarisation (--task translate | summarize) take their own path, train/seq2seq.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.config import SHORTHANDS, Recipe
from lmforge.errors import Diverged, LmforgeError
from lmforge.evaluate.classification import plot_confusion_matrix
from lmforge.evaluate.crossval import stratified_kfold, stratified_split, summarize_folds
from lmforge.io import write_json
from lmforge.models import build_model
from lmforge.tasks import GENERATIVE, task_class
from lmforge.tokenizer import Tokenizer
from lmforge.adapters import adapt
from lmforge.checkpoint import is_checkpoint, load_checkpoint
from lmforge.train.runs import check_resume, finetune_recipe, load_base, resolved, settings  # noqa: F401 (re-exported)
from lmforge.train.parallel import world
from lmforge.train.trainer import Trainer, held_run_dir

ADVICE = "lower lr (e.g. FinetuneConfig(lr=1e-5)) and start again with another out directory"  # to Python callers


@dataclass
class FinetuneConfig:
    """The Python front door to a fine-tuning recipe: each argument is the recipe key SHORTHANDS names
    (lr -> train.lr, epochs -> task.epochs); None keeps the shipped `finetune` recipe's value."""

    task: str | None = None  # classify | token | qa | translate | summarize
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    question_column: str | None = None
    context_column: str | None = None
    answer_column: str | None = None
    doc_stride: int | None = None
    tokens_column: str | None = None
    tags_column: str | None = None
    source_column: str | None = None
    target_column: str | None = None
    pair: str | None = None
    label_smoothing: float | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    max_target_length: int | None = None
    val_rows: int | None = None
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
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    lora_targets: str | None = None
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


# ------------------------------------------------------------------------------------------ inputs


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


# ------------------------------------------------------------------------------------------ running


def _task_model(base: torch.nn.Module, head: str, labels: list[str]) -> torch.nn.Module:
    cfg = dataclasses.replace(base.config, head=head, labels=labels)
    model = build_model(cfg)
    model.base.load_state_dict(base.state_dict())
    return model


def train_and_test(inputs: Inputs, split: tuple, recipe: Recipe, out: Path, log=print, resume: bool = False,
                   wrap=None) -> dict:
    """Fine-tune on split[0], keep the best on split[1], score split[2] once: the report (a dict).
    wrap: what trains in the task's place, given the task (a distillation's teacher: tasks/distill.py)."""
    added = 0
    if recipe.task.augment:
        inputs, split, added = augmented(inputs, split, recipe, log)
    task = inputs.task(recipe)
    parts = [task.encode(idx, inputs.tokenizer) for idx in split]
    cut = sum(p[0].truncated for p in parts)
    if cut:
        log(task.truncation_note(cut, len(next(iter(inputs.rows.values())))))
    task.fit_on(parts[0], parts[1])
    seed = recipe.train.seed
    torch.manual_seed(seed)  # the new head's initial weights: the same for the same seed, in any process
    model = _task_model(inputs.base, task.kind, task.labels)
    lora = adapt(model, recipe.task, log)
    run = resolved(recipe, model.config, len(parts[0][0]))
    torch.manual_seed(seed)
    trainer = Trainer(model, wrap(task) if wrap else task, run.train, out, recipe=run, resume=resume, log=log)
    result = trainer.fit()
    best, _ = load_checkpoint(out, trainer.device)  # the kept (best-on-validation) weights
    report: dict = {"task": task.kind, "base_params": inputs.base.num_params(), "train_rows": len(split[0]) - added,
                    **({"augmented_rows": added} if recipe.task.augment else {}),
                    "validation_rows": len(split[1]), "test_rows": len(split[2]), "truncated": cut,
                    "steps": result.steps, "seconds": round(result.seconds, 1),
                    "best_validation": {k: v for k, v in (result.best or {}).items() if k != "report"}}
    if lora:
        report["lora"] = lora
    report.update(task.test(best, parts[2], split[0], trainer.autocast))
    return report


def augmented(inputs: Inputs, split: tuple, recipe: Recipe, log=print) -> tuple[Inputs, tuple, int]:
    """--augment: the training rows' variants (data/augment.py) appended to the rows, their indices to
    the training split; validation and test rows are left alone. Returns (inputs, split, rows added)."""
    from lmforge.data.augment import Augmenter
    from lmforge.train.predict import round_trip

    t = recipe.task
    translate = round_trip(t.augment_via, log) if t.augment_via else None
    aug = Augmenter(t.augment, t.augment_n, t.augment_alpha, recipe.train.seed, translate)
    texts = inputs.rows["text_column"]
    made = aug.variants([texts[i] for i in split[0]])
    rows = {name: list(cells) for name, cells in inputs.rows.items()}
    new_idx = []
    for i, variants in zip(split[0], made):
        for v in variants:
            new_idx.append(len(rows["text_column"]))
            for name, cells in rows.items():
                cells.append(v if name == "text_column" else cells[i])
    log(f"augment: {len(new_idx):,} variants of {len(split[0]):,} training rows ({','.join(aug.ops)})")
    return Inputs(inputs.base, inputs.tokenizer, rows), (list(split[0]) + new_idx, split[1], split[2]), len(new_idx)


def three_way_split(task, recipe: Recipe) -> tuple:
    """(train, validation, test) row indices, stratified by the task's labels, the same for the same recipe."""
    t = recipe.task
    fractions = (1 - t.val_fraction - t.test_fraction, t.val_fraction, t.test_fraction)
    return stratified_split(task.stratify_by(), fractions, seed=recipe.train.seed)


def test_split_scores(run: str | Path) -> dict:
    """A fine-tuned classifier run's figures on its own test split, made again as its fine-tuning made
    it (its recipe.yaml: the rows, the fractions, the seed): how a compressed copy of it is compared."""
    from lmforge.config import load_recipe

    recipe_file = Path(run) / "recipe.yaml"
    recipe = load_recipe(str(recipe_file)) if recipe_file.is_file() else None
    if recipe is None or recipe.task is None or recipe.task.kind != "classify":
        raise LmforgeError(f"{run} is not a fine-tuned classifier run with its recipe.yaml; score it with lmforge predict")
    model, tokenizer = load_checkpoint(run)
    inputs = Inputs(model, tokenizer, task_class("classify").read(recipe.task.data, recipe.task))
    task = inputs.task(recipe)
    part = task.encode(three_way_split(task, recipe)[2], tokenizer)
    scores = task.score(model, part)
    return {"accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}


def finetune_run(recipe: Recipe, out: str | Path, log=print, resume: bool = False, inputs: Inputs | None = None,
                 wrap=None) -> dict:
    """`lmforge finetune`: split, fine-tune, keep the best, score the test split; report.json beside the
    run. resume: continue a run that was stopped, from its last kept checkpoint, with its settings.
    inputs: the base model and rows when already read; wrap: see train_and_test."""
    out, t = Path(out), recipe.task
    if t.kind == "chat":  # a causal model on conversations (train/chat.py)
        from lmforge.train.chat import chat_run

        return chat_run(recipe, out, log, resume)
    if t.kind in GENERATIVE:  # encoder-decoder tasks write their outputs: scored apart (train/seq2seq.py)
        from lmforge.train.seq2seq import seq2seq_run

        return seq2seq_run(recipe, out, log, resume)
    with held_run_dir(out, "lmforge finetune"):
        check_resume(out, recipe, resume)
        inputs = inputs or read_inputs(recipe)
        split = three_way_split(inputs.task(recipe), recipe)
        report = train_and_test(inputs, split, recipe, out, log, resume, wrap)
        report.update(base=str(t.base), data=str(t.data), config=settings(recipe))
        if not world().main:  # under torchrun, process 0 writes the run
            return report
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
