"""Fine-tuning an encoder-decoder model to translate or summarise, with an honest evaluation.

    lmforge finetune t5-mini --task translate --data bible --pair en-es --out RUN
    lmforge finetune BASE --task summarize --data bbc-news --out RUN
    lmforge finetune BASE --task translate --data pairs.tsv --source-column en --target-column es

BASE (task.base) is an lmforge encoder-decoder run, a Hugging Face T5 / BART / Marian directory, or an
encoder-decoder preset (t5-mini, transformer-base, ...), which is trained from scratch with a
tokenizer trained on the training split's sources and targets. The pairs are split once, seeded; a
corpus with groups (the bible's books) is split by whole groups, so that test verses are not
near-copies of training verses. Validation picks the checkpoint by BLEU or chrF (translate) or
ROUGE-L (summarize) of beam-search outputs; the test split is scored once, by the kept checkpoint,
beside the baseline (copy the source; lead-1). The loop is the pretraining loop (train/trainer.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.adapters import adapt, trainable_report
from lmforge.checkpoint import load_checkpoint
from lmforge.config import PRESETS, Recipe, model_config_from_preset
from lmforge.data.parallel import load_pairs, split_pairs
from lmforge.errors import LmforgeError
from lmforge.io import write_json
from lmforge.models import build_model
from lmforge.tasks import task_class
from lmforge.tokenizer import train_tokenizer
from lmforge.train.runs import check_resume, load_base, resolved, settings
from lmforge.train.parallel import world
from lmforge.train.trainer import Trainer, held_run_dir


def read_pairs(recipe: Recipe):
    """The task's (source, target) pairs, split into train / validation / test."""
    t = recipe.task
    if not t.data:
        raise LmforgeError("fine-tuning needs {field}: give the pairs (a file, bible or bbc-news)", "task.data")
    pairs = load_pairs(t.data, pair=t.pair, source_column=t.source_column, target_column=t.target_column, task=t.kind)
    return pairs, split_pairs(pairs, t.val_fraction, t.test_fraction, recipe.train.seed)


def base_model(recipe: Recipe, train_texts: list[str], log=print):
    """The model to fine-tune and its tokenizer: a run or a Hugging Face directory as saved, or a
    preset built from scratch over a tokenizer trained on `train_texts` (data.tokenizer, data.vocab_size)."""
    t, spec = recipe.task, str(recipe.task.base or "")
    if not spec:
        raise LmforgeError("fine-tuning needs {field}: give an encoder-decoder run, a Hugging Face T5 / BART / Marian "
                           "directory, or a preset such as t5-mini", "task.base")
    if spec in PRESETS and not Path(spec).exists():
        if PRESETS[spec].get("family") != "seq2seq":
            raise LmforgeError(f"{{setting}} is a {PRESETS[spec].get('family', 'gpt')} preset, which cannot {t.kind}; "
                               "use an encoder-decoder preset: " + ", ".join(
                                   p for p, v in PRESETS.items() if v.get("family") == "seq2seq"), "task.base", spec)
        log(f"training a {recipe.data.tokenizer} tokenizer of {recipe.data.vocab_size} tokens on the training pairs")
        tokenizer = train_tokenizer(recipe.data.tokenizer, train_texts, recipe.data.vocab_size)
        overrides = {k: v for k, v in recipe.model.items() if k not in ("preset", "vocab_size")}
        cfg = model_config_from_preset(spec, **{**overrides, "vocab_size": tokenizer.vocab_size,
                                                "decoder_start_id": tokenizer.pad_id or 0})
        torch.manual_seed(recipe.train.seed)
        return build_model(cfg), tokenizer
    return load_base(spec)


def seq2seq_run(recipe: Recipe, out: str | Path, log=print, resume: bool = False) -> dict:
    """`lmforge finetune --task translate | summarize`: split, fine-tune, keep the best on validation,
    score the test split once; report.json beside the run."""
    out, t = Path(out), recipe.task
    with held_run_dir(out, "lmforge finetune"):
        check_resume(out, recipe, resume)
        pairs, (train, val, test) = read_pairs(recipe)
        log(f"{pairs.description}: {len(train.sources)} train / {len(val.sources)} validation / "
            f"{len(test.sources)} test pairs")
        if resume:
            model, tokenizer = load_checkpoint(out)  # a run from scratch keeps the tokenizer it trained
        else:
            model, tokenizer = base_model(recipe, train.sources + train.targets, log)
            adapt(model, t, log)
        task = task_class(t.kind)(t, recipe.train, tokenizer, model.config, log)
        enc = task.fit_on((train.sources, train.targets), (val.sources, val.targets))
        note = task.truncation_note(enc, len(train.sources))
        if note:
            log(note)
        run = resolved(recipe, model.config, len(train.sources))
        trainer = Trainer(model, task, run.train, out, recipe=run, resume=resume, log=log)
        result = trainer.fit()
        best, _ = load_checkpoint(out, trainer.device)  # the kept (best-on-validation) weights
        log(f"scoring the test split: {len(test.sources)} pairs decoded with {t.num_beams} beam(s), then bootstrap "
            "intervals ...")
        report = {"task": t.kind, "base": str(t.base), "data": str(t.data), "pair": t.pair,
                  "base_params": model.num_params(), "train_rows": len(train.sources),
                  "validation_rows": len(val.sources), "test_rows": len(test.sources), "truncated": enc.truncated,
                  "steps": result.steps, "seconds": round(result.seconds, 1), "dtype": result.dtype,
                  "best_validation": {k: v for k, v in (result.best or {}).items() if k != "report"},
                  **task.test(best, test.sources, test.targets, trainer.autocast), "config": settings(recipe)}
        if getattr(model, "lora", None) is not None:
            report["lora"] = trainable_report(model)
        if world().main:  # under torchrun, process 0 writes the run
            write_json(out / "report.json", report)
    return report
