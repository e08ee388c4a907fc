"""Pretraining tasks: a token source, an objective and its evaluation, in the shape every task has.

Every task gives the training loop (train/trainer.py) the same five things: `next_batch()` (a dict
of tensors), `loss(model, batch)`, `evaluate(model, full, autocast)` (a dict with "loss" and the
task's metrics), the name of its headline metric (what progress shows, early stopping watches and
the best checkpoint keeps), and `state_dict()` for the data position saved with each checkpoint.

    clm      GPT: next-token prediction on windows of the text              (objectives/clm.py)
    mlm      BERT: masked LM on runs of consecutive sentences                (objectives/mlm.py)
    mlm+nsp  BERT: masked LM on sentence pairs + next-sentence prediction
    rtd      ELECTRA: generator MLM + replaced-token detection               (objectives/rtd.py)
    span     T5: span corruption of windows of the text                      (data/spans.py, objectives/seq2seq.py)
    denoise  BART: sentence permutation + text infilling of windows; the target is the window

Building the data and the model from a recipe is train/pretrain.py's; labelled tasks are beside this file.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from lmforge.config import ModelConfig, Recipe
from lmforge.data.batches import RandomWindows, eval_windows, seq2seq_batch
from lmforge.data.masking import mask_tokens
from lmforge.data.pairs import PairBatches, check_split, eval_batches
from lmforge.errors import LmforgeError
from lmforge.evaluate.perplexity import evaluate_lm, perplexity
from lmforge.objectives.clm import clm_loss
from lmforge.objectives.mlm import mlm_loss
from lmforge.objectives.rtd import rtd_loss
from lmforge.objectives.seq2seq import seq2seq_loss


def pretraining_task(recipe: Recipe, objective: str, data, model_config: ModelConfig):
    """The task of a pretraining objective over its prepared data."""
    if objective == "clm":
        return LanguageModelling(recipe, data, model_config)
    if objective in ("span", "denoise"):
        return Denoising(recipe, data, model_config, objective)
    return EncoderPretraining(recipe, data, model_config, objective)


def _sum_stats(total: dict, stats: dict) -> None:
    for k, v in stats.items():
        total[k] = total.get(k, 0.0) + float(v)


class LanguageModelling:
    """Causal LM on random windows of the token stream; evaluated by perplexity and bits per byte."""

    headline, higher_is_better = "perplexity", False

    def __init__(self, recipe: Recipe, data, model_config: ModelConfig):
        self.recipe, self.data, self.context = recipe, data, model_config.context_length
        tcfg = recipe.train
        self.batches = RandomWindows(data.train, tcfg.batch_size, self.context, tcfg.seed)

    def next_batch(self) -> dict:
        x, y = self.batches.next()
        return {"input_ids": x, "targets": y}

    def loss(self, model, batch: dict) -> torch.Tensor:
        return clm_loss(model, batch["input_ids"], batch["targets"])

    def evaluate(self, model, full: bool = False, autocast=None) -> dict:
        cfg = self.recipe.train
        return evaluate_lm(model, self.data.val, self.context, cfg.batch_size, None if full else cfg.eval_batches,
                           self.data.val_bytes_per_token, autocast)

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


class Denoising:
    """An encoder-decoder's pretraining on random windows of the token stream (train.mask_prob,
    train.mean_span), evaluated on the same corrupted validation windows every time (the loss per
    target token and its perplexity):

      span     T5: 15% of each window corrupted in spans of mean length 3; the encoder reads the window
               with each span replaced by a sentinel, the decoder writes the sentinels and what they hide
      denoise  BART: the window's sentences shuffled, then 30% of its tokens masked in spans of Poisson(3)
               lengths, each span one mask token; the decoder writes the whole window back
    """

    headline, higher_is_better = "loss", False

    def __init__(self, recipe: Recipe, data, model_config: ModelConfig, objective: str = "span"):
        from lmforge.data.spans import bart_denoise, sentence_end_ids, span_corrupt

        tok, cfg = data.tokenizer, recipe.train
        if objective == "span" and not tok.sentinel_ids:
            raise LmforgeError("span corruption needs sentinel tokens (<extra_id_0>, ...), which this tokenizer lacks; "
                               "set data.sentinels (e.g. 100) so the trained tokenizer reserves them", "data.sentinels")
        if objective == "span":
            self.corrupt = lambda w, rng: span_corrupt(w, tok.sentinel_ids, rng, cfg.mask_prob, cfg.mean_span,
                                                       tok.eos_id)
        else:
            ends = sentence_end_ids(tok)
            self.corrupt = lambda w, rng: bart_denoise(w, tok.mask_id, rng, cfg.mask_prob, cfg.mean_span, ends,
                                                       tok.eos_id)
        self.recipe, self.data, self.tok = recipe, data, tok
        self.start, self.pad = model_config.decoder_start_id, tok.pad_id if tok.pad_id is not None else 0
        self.window = model_config.context_length - 1  # the end token follows
        cfg = recipe.train
        self.batches = RandomWindows(data.train, cfg.batch_size, self.window - 1, cfg.seed)  # windows of `window`
        self.rng = np.random.default_rng(cfg.seed)

    def corrupted(self, windows: torch.Tensor, rng: np.random.Generator) -> dict:
        rows = [self.corrupt(w, rng) for w in windows.tolist()]
        return seq2seq_batch([r[0] for r in rows], [r[1] for r in rows], self.pad, self.start)

    def next_batch(self) -> dict:
        x, y = self.batches.next()
        return self.corrupted(torch.cat([x, y[:, -1:]], dim=1), self.rng)  # the whole window

    def loss(self, model, batch: dict) -> torch.Tensor:
        return seq2seq_loss(model, batch)

    @torch.no_grad()
    def evaluate(self, model, full: bool = False, autocast=None) -> dict:
        cfg = self.recipe.train
        rng = np.random.default_rng(cfg.seed + 10_000)  # the same corruption every time
        was_training, total, count = model.training, 0.0, 0
        model.eval()
        device = next(model.parameters()).device
        try:
            for x, y in eval_windows(self.data.val, cfg.batch_size, self.window - 1, None if full else cfg.eval_batches):
                batch = {k: v.to(device) for k, v in self.corrupted(torch.cat([x, y[:, -1:]], 1), rng).items()}
                n = int((batch["labels"] >= 0).sum())
                with (autocast or contextlib.nullcontext)():
                    total += float(seq2seq_loss(model, batch)) * n
                count += n
        finally:
            model.train(was_training)
        loss = total / max(1, count)
        return {"loss": loss, "perplexity": perplexity(loss), "target_tokens": count}

    def state_dict(self) -> dict:
        return {**self.batches.state_dict(), "corruption": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)
        self.rng.bit_generator.state = state["corruption"]


class EncoderPretraining:
    """MLM (with or without NSP) for BERT, RTD for ELECTRA, on sentence batches masked on the fly.

    Masks are drawn fresh for every training batch (RoBERTa's dynamic masking: the same sentence is
    masked differently each time it is seen); validation uses one fixed seed, so its figure moves
    only when the model does.
    """

    def __init__(self, recipe: Recipe, data, model_config: ModelConfig, objective: str):
        self.recipe, self.data, self.objective = recipe, data, objective
        tcfg, tok = recipe.train, data.tokenizer
        missing = [r for r in ("cls", "sep", "mask", "pad") if getattr(tok, f"{r}_id") is None]
        if missing:
            raise LmforgeError(f"the tokenizer has no {', '.join(missing)} token, which {objective} needs; "
                               "train one with data.tokenizer=wordpiece (or bpe)")
        self.nsp = objective == "mlm+nsp"
        self.specials = dict(cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id)
        self.max_len = model_config.context_length
        self.batches = PairBatches(data.train, tcfg.batch_size, self.max_len, nsp=self.nsp, seed=tcfg.seed,
                                   **self.specials)
        check_split(data.val, self.max_len, self.nsp, "validation")  # now, not at the first evaluation
        self.masker = torch.Generator().manual_seed(tcfg.seed + 1)
        self.sampler = torch.Generator().manual_seed(tcfg.seed + 2)  # ELECTRA's generator samples
        self.headline = {"rtd": "rtd_accuracy"}.get(objective, "mlm_accuracy")
        self.higher_is_better = True

    def mask(self, batch: dict, generator: torch.Generator) -> dict:
        tok, tcfg = self.data.tokenizer, self.recipe.train
        inputs, labels = mask_tokens(
            batch["input_ids"], mask_id=tok.mask_id, vocab_size=tok.vocab_size, special_ids=tok.special_ids,
            mask_prob=tcfg.mask_prob, word_ids=batch["word_ids"] if tcfg.whole_word_mask else None,
            generator=generator)
        out = {k: v for k, v in batch.items() if k != "word_ids"}
        out.update(input_ids=inputs, labels=labels)
        return out

    def next_batch(self) -> dict:
        return self.mask(self.batches.next(), self.masker)

    def state_dict(self) -> dict:  # the sentence sampler's and the masker's positions
        return {"batches": self.batches.state_dict(), "masker": self.masker.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state["batches"])
        self.masker.set_state(state["masker"])

    def _loss(self, model, batch: dict, sampler=None):
        if self.objective == "rtd":
            return rtd_loss(model, batch, sampler)
        return mlm_loss(model, batch)

    def loss(self, model, batch: dict) -> torch.Tensor:
        sampler = self.sampler if batch["input_ids"].device.type == "cpu" else None
        return self._loss(model, batch, sampler)[0]

    @torch.no_grad()
    def evaluate(self, model, full: bool = False, autocast=None) -> dict:
        cfg = self.recipe.train
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        masker = torch.Generator().manual_seed(cfg.seed + 10_000)
        sampler = torch.Generator().manual_seed(cfg.seed + 20_000)
        total: dict = {}
        n_batches = None if full else cfg.eval_batches
        try:
            for raw in eval_batches(self.data.val, cfg.batch_size, self.max_len, nsp=self.nsp, n_batches=n_batches,
                                    seed=cfg.seed, **self.specials):  # the same batches every time
                batch = {k: v.to(device) for k, v in self.mask(raw, masker).items()}
                with (autocast or contextlib.nullcontext)():
                    loss, stats = self._loss(model, batch, sampler if device.type == "cpu" else None)
                _sum_stats(total, {"loss": loss.detach(), "batches": 1, **stats})
        finally:
            model.train(was_training)
        if not total:
            raise LmforgeError("the validation split has no sentences to score; give more text or a larger "
                               "data.val_fraction")
        return _metrics(total)


def _metrics(total: dict) -> dict:
    n = total["batches"]
    out = {"loss": total["loss"] / n, "batches": int(n)}
    for name in ("mlm", "nsp", "rtd"):
        if f"{name}_count" in total:
            out[f"{name}_loss"] = total[f"{name}_loss"] / n
            out[f"{name}_accuracy"] = total[f"{name}_correct"] / max(1.0, total[f"{name}_count"])
    if "mlm_loss" in out:
        out["mlm_perplexity"] = perplexity(out["mlm_loss"])
    if "replaced_count" in total:
        out["replaced_recall"] = total["replaced_found"] / max(1.0, total["replaced_count"])
    return out
