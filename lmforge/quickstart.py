"""The main job in one call: corpus -> BPE tokenizer -> small GPT -> trained, evaluated, sampled.

Three perplexities on the same validation tokens tell the story: the untrained model (about the
vocabulary size: it guesses uniformly), a bigram model counted on the training tokens, and the
trained Transformer, which has to beat both.
"""

from __future__ import annotations

import time
from pathlib import Path

from lmforge.api import LM
from lmforge.config import load_recipe
from lmforge.errors import LmforgeError
from lmforge.evaluate.baselines import bigram_eval
from lmforge.checkpoint import is_checkpoint
from lmforge.train.pretrain import pretrainer
from lmforge.train.trainer import held_run_dir

PROMPTS = {"en": ["", "ROMEO:", "The king"], "zh": ["", "中国", "人民"]}


def run_quickstart(corpus: str = "shakespeare", out: str | Path = "runs/quickstart",
                   overrides: list[str] | None = None, log=print, progress: bool = True,
                   samples: int = 3, sample_tokens: int = 120) -> dict:
    """Train the quick start's GPT on `corpus` into `out` (which must not hold a run yet) and report."""
    t0 = time.perf_counter()
    recipe = load_recipe("quickstart", [f"data.corpus={corpus}", f"train.progress={progress}", *(overrides or [])])
    with held_run_dir(out, "lmforge quickstart"):
        if is_checkpoint(out):
            raise LmforgeError(f"{out} already holds a trained model, which the quick start would overwrite; give "
                               f"another --out, or continue that run with `lmforge train --out {out} --resume`")
        trainer = pretrainer(recipe, out, log=log)
        data, model = trainer.data, trainer.model
        log(f"corpus {corpus}: {data.meta['train_tokens']:,} training and {data.meta['val_tokens']:,} validation "
            f"tokens (vocabulary {data.tokenizer.vocab_size:,})")
        log(f"model: {model.num_params() / 1e6:.2f}M parameters, {model.flops_per_token() / 1e6:.1f} MFLOP per token")
        untrained = trainer.evaluate(full=True)
        bigram = bigram_eval(data.train, data.val, data.tokenizer.vocab_size, bytes_per_token=data.val_bytes_per_token)
        log(f"validation perplexity before training {untrained['perplexity']:.1f}, bigram model "
            f"{bigram['perplexity']:.1f}")
        result = trainer.fit()
    trained = result.evals[-1]  # the trainer's final evaluation covers the whole validation split
    log(f"validation perplexity after training {trained['perplexity']:.1f} "
        f"({trained['bits_per_byte']:.3f} bits per byte) at {result.tokens_per_s:,.0f} tokens/s")
    lm = LM(model.eval(), data.tokenizer, Path(out))
    language = "zh" if data.meta.get("language") == "zh" else "en"
    texts = [{"prompt": p, "text": lm.generate(p, max_new_tokens=sample_tokens, temperature=0.8, top_k=50, seed=i)}
             for i, p in zip(range(samples), PROMPTS[language] * samples)]
    return {
        "corpus": corpus, "run_dir": str(out), "vocab_size": data.tokenizer.vocab_size,
        "train_tokens": data.meta["train_tokens"], "val_tokens": data.meta["val_tokens"],
        "parameters": model.num_params(), "flops_per_token": model.flops_per_token(), "steps": result.steps,
        "stopped_early": result.stopped_early, "tokens_per_s": round(result.tokens_per_s, 1),
        "dtype": result.dtype, "dtype_reason": result.dtype_reason,  # as train.dtype=auto chose for this machine
        "train_seconds": round(result.seconds, 1), "untrained": untrained, "bigram": bigram, "trained": trained,
        "samples": texts, "seconds": round(time.perf_counter() - t0, 1),
    }
