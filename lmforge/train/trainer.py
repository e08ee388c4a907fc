"""The training loop: one optimiser step = `grad_accum` micro-batches, clipped, AdamW, scheduled.

AdamW (Loshchilov & Hutter 2019) with weight decay only on matrices (not on biases, norm gains):
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  w -= lr (m_hat / (sqrt(v_hat) + eps) + wd w)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from lmforge.config import Recipe
from lmforge.data.batches import RandomWindows
from lmforge.data.shards import TokenData, prepare
from lmforge.errors import LmforgeError
from lmforge.evaluate.perplexity import evaluate_lm
from lmforge.models import build_model
from lmforge.objectives.clm import clm_loss
from lmforge.runtime import autocast, autocast_dtype, pick_device
from lmforge.tokenizer import Tokenizer
from lmforge.train import checkpoint as ckpt
from lmforge.train.logging import MetricsLog, plot_losses
from lmforge.train.schedule import lr_at


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    evals: list[dict] = field(default_factory=list)  # {"step", "loss", "perplexity", "bits_per_byte"}
    tokens_per_s: float = 0.0  # training only: evaluation and checkpoint time left out
    seconds: float = 0.0  # wall time of fit(), evaluations included
    eval_seconds: float = 0.0
    stopped_early: bool = False
    n_params: int = 0
    flops_per_token: float = 0.0


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    try:  # the fused kernel updates all tensors in one pass; older builds lack it on some devices
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: str | Path, resume: bool = False, log=print,
                 data: TokenData | None = None):
        self.recipe, self.run_dir, self.resume, self.log = recipe, Path(run_dir), resume, log
        tcfg = recipe.train
        self.device = pick_device(tcfg.device)
        self.amp_dtype = autocast_dtype(self.device, tcfg.dtype)
        self.autocast = autocast(self.device, self.amp_dtype)
        if resume:
            ckpt.load_trainer_state(self.run_dir)  # fail early, before any work, if it cannot resume
            tokenizer = Tokenizer.load(self.run_dir / "tokenizer.json")
            self.data = data or prepare(recipe.data, tokenizer=tokenizer, log=log)
        else:
            self.data = data or prepare(recipe.data, log=log)
        self.model_config = recipe.model_config(self.data.tokenizer.vocab_size)
        torch.manual_seed(tcfg.seed)
        self.model = build_model(self.model_config).to(self.device)
        self.optimizer = make_optimizer(self.model, tcfg)
        self.batches = RandomWindows(self.data.train, tcfg.batch_size, self.model_config.context_length, tcfg.seed)
        self.step = 0
        self.horizon = tcfg.max_steps  # where the schedule ends; shrinks to fit train.time_limit_minutes
        if resume:
            self._load_state()

    # --- state -----------------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "data": self.batches.state_dict(),
                 "rng_cpu": torch.get_rng_state()}
        if self.horizon < self.recipe.train.max_steps:  # shrunk to fit the time limit
            state["horizon"] = self.horizon
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _load_state(self) -> None:
        from safetensors.torch import load_model

        state = ckpt.load_trainer_state(self.run_dir)
        load_model(self.model, str(self.run_dir / "model.safetensors"), device=str(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["data"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.step = int(state["step"])
        if "horizon" in state:
            self.horizon = min(int(state["horizon"]), self.recipe.train.max_steps)

    def save(self) -> None:
        ckpt.save_checkpoint(self.run_dir, self.model, self.data.tokenizer, self.recipe, self._state(), self.step)

    # --- evaluation --------------------------------------------------------------------------------
    def evaluate(self, full: bool = False) -> dict:
        """Validation loss, perplexity and bits per byte on train.eval_batches batches spread evenly
        over the split, or on every validation token when `full`."""
        cfg = self.recipe.train
        return evaluate_lm(self.model, self.data.val, self.model_config.context_length, cfg.batch_size,
                           None if full else cfg.eval_batches, self.data.val_bytes_per_token, self.autocast)

    # --- the loop ------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.recipe.train
        model, opt = self.model, self.optimizer
        metrics = MetricsLog(self.run_dir, self.step if self.resume else None)
        result = TrainResult(self.run_dir, self.step, n_params=model.num_params(),
                             flops_per_token=model.flops_per_token())
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.model_config.context_length
        if self.step == 0:
            self._record_eval(metrics, result)
            self.save()
        model.train()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not cfg.progress, unit="step",
                   dynamic_ncols=True, leave=False)
        t_start = t_log = time.perf_counter()
        step_at_log = step_at_start = self.step
        try:
            while self.step < self.horizon:
                if cfg.time_limit_minutes > 0 and self.step == step_at_start + 20:
                    self._fit_schedule_to_time(time.perf_counter() - t_start, 20, bar)
                lr = lr_at(self.step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps,
                           total=self.horizon, kind=cfg.schedule)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss_sum = 0.0
                for _ in range(cfg.grad_accum):
                    x, y = self.batches.next()
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    with self.autocast():
                        loss = clm_loss(model, x, y) / cfg.grad_accum
                    loss.backward()
                    loss_sum += loss.item()
                if not math.isfinite(loss_sum):
                    raise LmforgeError(
                        f"the training loss became {loss_sum} at step {self.step + 1}; the last good checkpoint "
                        f"(step {ckpt.checkpoint_step(self.run_dir)}) is kept in {self.run_dir}: lower train.lr "
                        "(e.g. --set train.lr=3e-4) or raise train.warmup_steps, then start again"
                    )
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                self.step += 1
                bar.update(1)
                now = time.perf_counter()
                if self.step % cfg.log_every == 0 or self.step == self.horizon:
                    tps = (self.step - step_at_log) * tokens_per_step / max(now - t_log, 1e-9)
                    t_log, step_at_log = now, self.step
                    metrics.write(step=self.step, loss=loss_sum, lr=lr, tokens_per_s=round(tps, 1),
                                  elapsed_s=round(now - t_start, 2))
                    bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tps:,.0f}")
                out_of_time = cfg.time_limit_minutes > 0 and now - t_start > 60 * cfg.time_limit_minutes
                last = self.step == self.horizon or out_of_time
                t_eval = time.perf_counter()
                if self.step % cfg.eval_every == 0 or last:
                    self._record_eval(metrics, result, full=last)  # the final figure scores every token
                    if cfg.progress:
                        bar.write(f"step {self.step}: val loss {result.evals[-1]['loss']:.4f}, "
                                  f"perplexity {result.evals[-1]['perplexity']:.2f}")
                    if cfg.save_every == 0 or last:
                        self.save()
                elif cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
                result.eval_seconds += time.perf_counter() - t_eval
                t_log += time.perf_counter() - t_eval  # keep the logged tokens/s about training
                if out_of_time:
                    self.log(f"time limit of {cfg.time_limit_minutes} minutes reached at step {self.step}; saved")
                    break
        finally:
            bar.close()
        result.seconds = time.perf_counter() - t_start
        done = self.step - result.steps
        result.tokens_per_s = done * tokens_per_step / max(result.seconds - result.eval_seconds, 1e-9)
        result.steps = self.step
        result.stopped_early = self.step < cfg.max_steps
        plot_losses(metrics.read(), self.run_dir / "loss.png", title=str(self.run_dir.name))
        return result

    def _fit_schedule_to_time(self, elapsed: float, steps: int, bar) -> None:
        """With a time limit, end the schedule (and the run) at the step the measured speed reaches in
        time, so the learning rate still anneals instead of being cut off mid-schedule."""
        cfg = self.recipe.train
        remaining = 60 * cfg.time_limit_minutes * 0.9 - elapsed  # 10% kept for evaluations
        fits = self.step + int(remaining / (elapsed / steps))
        if fits < self.horizon:
            self.horizon = max(self.step + 1, fits)
            bar.total = self.horizon
            self.log(f"at the measured speed, {self.horizon} of {cfg.max_steps} steps fit in the time limit of "
                     f"{cfg.time_limit_minutes} minutes; the schedule now ends there")

    def _record_eval(self, metrics: MetricsLog, result: TrainResult, full: bool = False) -> None:
        ev = self.evaluate(full)
        self.model.train()
        ev["step"] = self.step
        result.evals.append(ev)
        metrics.write(step=self.step, val_loss=ev["loss"], val_perplexity=ev["perplexity"],
                      val_bits_per_byte=ev.get("bits_per_byte"))
