"""`lmforge compress-report RUN_A RUN_B ...`: what each compressed copy of a model costs and gains.

For every run: its size on disk (the weights file), its weights (an integer one counts as one, and a
pruned weight set to zero still counts: it is stored), decoding speed at batch 1 and batch 8 (greedy, new tokens per second, the
engine's own backend), and its quality: validation perplexity for a language model (the run's own
validation split, or a file), test accuracy and macro F1 for a classifier (its own test split, made
again as fine-tuning made it). The first run is the original: every other row gets its change
against it, and one PNG shows quality against size and against speed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from lmforge.checkpoint import load_pretrained
from lmforge.config import GenerateConfig
from lmforge.errors import LmforgeError
from lmforge.models.quantized import weights_count

PROMPT = 16  # tokens of each prompt; the new tokens fill the rest of the context, up to NEW
NEW = 128
ROUNDS = 5  # speed measurements per model: the best counts


def weights_bytes(run: Path) -> int:
    files = [run / n for n in ("model.safetensors", "adapter_model.safetensors") if (run / n).is_file()]
    if not files:
        raise LmforgeError(f"{run} holds no weights (model.safetensors); give run directories")
    return sum(f.stat().st_size for f in files)


@torch.no_grad()
def decode_speed(model: torch.nn.Module, batch: int, repeats: int = ROUNDS) -> float:
    """Greedy new tokens per second over `batch` rows of PROMPT fixed tokens, the best of `repeats`."""
    from lmforge.generate.engine import Engine

    engine = Engine(model.eval())
    new = min(NEW, model.config.context_length - PROMPT)
    rows = [[(7 * i + 3 * r) % model.config.vocab_size for i in range(PROMPT)] for r in range(batch)]
    gen = GenerateConfig(max_new_tokens=new, temperature=0.0)
    engine.generate(rows, GenerateConfig(max_new_tokens=4, temperature=0.0))  # warm: plans, the compiled step
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        out = engine.generate(rows, gen)
        best = max(best, sum(map(len, out)) / (time.perf_counter() - start))
    return best


def perplexity(run: Path, model, tokenizer, file: str | None = None) -> dict:
    """Validation perplexity: of `file`, or of the run's own validation split (its recipe.yaml)."""
    from lmforge.config import load_recipe
    from lmforge.data.corpora import load_corpus
    from lmforge.data.shards import encode_documents, prepare
    from lmforge.evaluate.perplexity import evaluate_lm

    if file is not None:
        tokens = encode_documents(tokenizer, load_corpus(file).documents)
    elif (run / "recipe.yaml").is_file():
        tokens = prepare(load_recipe(str(run / "recipe.yaml")).data, tokenizer=tokenizer, log=lambda *a: None).val
    else:
        raise LmforgeError(f"{run} has no recipe.yaml, so no validation split of its own; give the text with --file")
    r = evaluate_lm(model, tokens, model.config.context_length)
    return {"perplexity": r["perplexity"]}


def measure(run: str | Path, file: str | None = None, classifier_scores: Callable | None = None):
    """One row of the report but its speeds, and the model to time (None for a classifier)."""
    run = Path(run)
    size = weights_bytes(run)
    model, tokenizer = load_pretrained(run)
    row = {"run": str(run), "bytes": size, "parameters": weights_count(model)}
    if model.config.head == "classify":
        if classifier_scores is None:
            raise LmforgeError(f"{run} is a classifier: pass classifier_scores=lmforge.train.finetune.test_split_scores "
                               "to score its test split")
        return {**row, "tokens_per_s_1": None, "tokens_per_s_8": None, **classifier_scores(run)}, None
    if model.config.family != "gpt":
        raise LmforgeError(f"{run} is a {model.config.family} model; the report compares language models (GPT) and "
                           "classifiers")
    return {**row, **perplexity(run, model, tokenizer, file)}, model


def timed_in_rounds(timed: list[tuple[dict, torch.nn.Module]], rounds: int = ROUNDS) -> None:
    """tokens_per_s_1 and _8 of each row: the best of `rounds` rounds, each of which decodes with every
    model in turn. A machine whose speed drifts (another program starts, the clock changes) then moves
    every model alike, where timing one model after another would credit the drift to whichever ran
    during it (measured: two float32 models of one shape were 38% apart timed one after the other)."""
    for row, _ in timed:
        row["tokens_per_s_1"] = row["tokens_per_s_8"] = 0.0
    for _ in range(rounds):
        for row, model in timed:
            for batch in (1, 8):
                key = f"tokens_per_s_{batch}"
                row[key] = max(row[key], decode_speed(model, batch, repeats=1))


def with_deltas(rows: list[dict]) -> list[dict]:
    """Each row's change against the first, in percent, for every figure both have."""
    base = rows[0]
    keys = ("bytes", "parameters", "tokens_per_s_1", "tokens_per_s_8", "perplexity", "accuracy", "f1_macro")
    for row in rows:
        row["change_percent"] = {k: 100 * (row[k] / base[k] - 1) for k in keys
                                 if row.get(k) is not None and base.get(k)}
    return rows


def plot(rows: list[dict], out: Path) -> Path | None:
    """Quality against size and against batch-1 speed, one point per run, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    quality = "perplexity" if "perplexity" in rows[0] else "accuracy"
    speed = rows[0].get("tokens_per_s_1") is not None
    fig, axes = plt.subplots(1, 2 if speed else 1, figsize=(11 if speed else 6, 4.2), dpi=100, squeeze=False)
    panels = [("bytes", "size on disk (MB)", 1e-6)] + ([("tokens_per_s_1", "decode tokens/s at batch 1", 1.0)] if speed
                                                        else [])
    for ax, (key, label, scale) in zip(axes[0], panels):
        for r in rows:
            ax.scatter(r[key] * scale, r[quality], s=30)
            ax.annotate(Path(r["run"]).name, (r[key] * scale, r[quality]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel(f"validation {quality}" if quality == "perplexity" else "test accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle("quality against size" + (" and speed" if speed else ""))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def compress_report(runs: list[str], file: str | None = None, plot_to: str | Path | None = None,
                    classifier_scores: Callable | None = None) -> dict:
    """The rows (the first run the original), and the plot's path when one was drawn."""
    if len(runs) < 1:
        raise LmforgeError("give at least one run: the original first, then its compressed copies")
    measured = [measure(r, file, classifier_scores) for r in runs]
    timed_in_rounds([(row, model) for row, model in measured if model is not None])
    rows = with_deltas([row for row, _ in measured])
    kinds = {"perplexity" in r for r in rows}
    if len(kinds) > 1:
        raise LmforgeError("the runs mix language models and classifiers; report each kind on its own")
    drawn = plot(rows, Path(plot_to)) if plot_to else None
    return {"rows": rows, "plot": str(drawn) if drawn else None}
