"""The training loop: one optimiser step = `grad_accum` micro-batches, clipped, AdamW (or Adafactor), scheduled.

The loop knows nothing of the objective: a task (lmforge/tasks/) hands it batches, a loss and an
evaluation, so pretraining a GPT, a BERT or an ELECTRA and fine-tuning any of them run through this
one loop, with the same checkpoints, logs, early stopping and resume. What the model and the task
are is the caller's business (train/pretrain.py, train/finetune.py).

AdamW (Loshchilov & Hutter 2019) with weight decay only on matrices (not on biases, norm gains):
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  w -= lr (m_hat / (sqrt(v_hat) + eps) + wd w)

Adafactor (Shazeer & Stern 2018; `train.optimizer=adafactor`), T5's optimiser, moves each tensor by a
step relative to its own size, with the second moment of a matrix kept as one row and one column:
    v = r c^T / sum(r);  u = g / sqrt(v), clipped to RMS(u) <= 1;  w -= lr max(1e-3, RMS(w)) u
There `lr` is the relative step (T5: 1e-2 from scratch). A T5 parametrisation (attention scale folded into
W_q, embeddings of standard deviation 1) needs it: under AdamW's absolute step the tiny W_q moves ~10%
a step while the embeddings barely move, and a t5-mini trained from scratch on translation learns
a target-language model that ignores its source (docs/encoder-decoder.md has the measurement).

A step whose loss or gradient norm ||g||_2 is not finite is refused before the optimiser sees it
(AdamW would spread the NaN into every weight and its moments), and the run stops with `Diverged`:
the last checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from lmforge.config import Recipe, TrainConfig
from lmforge.errors import Diverged, LmforgeError
from lmforge.io import LOCK_NAME, RunLock
from lmforge.models import build_model
from lmforge.runtime import autocast, choose_dtype, pick_device
from lmforge.train.adafactor import BlockwiseAdafactor, stacked_blocks
from lmforge import checkpoint as ckpt
from lmforge.train.logging import MetricsLog, NoMetrics, plot_losses
from lmforge.train import parallel
from lmforge.train.parallel import CompiledLayers, should_compile
from lmforge.train.schedule import lr_at
from lmforge.train.tensorboard import TensorBoardLog, summary_writer


def batch_tokens(batch: dict) -> int:
    """The token positions a batch trains on (tokens/s): its inputs, or an encoder-decoder's source and target."""
    if "input_ids" in batch:
        return batch["input_ids"].numel()
    return batch["src"].numel() + batch["labels"].numel()


@contextlib.contextmanager
def held_run_dir(run_dir: str | Path, command: str):
    """Hold the run directory's lock (io.RunLock) for a whole run, so a second process is refused; a
    directory this made and left holding nothing but the lock (the run failed before any file) is removed."""
    run_dir = Path(run_dir)
    if not parallel.world().main:  # torchrun's other processes: process 0 holds the run and writes it
        yield run_dir
        return
    made = not run_dir.exists()
    with RunLock(run_dir, command):
        try:
            yield run_dir
        except BaseException:
            if made and run_dir.is_dir() and all(p.name == LOCK_NAME for p in run_dir.iterdir()):
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    evals: list[dict] = field(default_factory=list)  # {"step", "loss", and the task's metrics}
    tokens_per_s: float = 0.0  # training only: evaluation and checkpoint time left out
    seconds: float = 0.0  # wall time of fit(), evaluations included
    eval_seconds: float = 0.0
    stopped_early: bool = False
    n_params: int = 0
    flops_per_token: float = 0.0
    best: dict | None = None  # the evaluation of the kept checkpoint, with train.keep_best
    compiled: bool = False  # the training steps ran with compiled layers (train.compile)
    compile_seconds: float = 0.0  # the first compiled step, compilation included (left out of tokens_per_s)
    dtype: str = "float32"  # what the steps multiplied in: float32, or bfloat16 autocast (train.dtype)
    dtype_reason: str = ""  # why (train.dtype=auto: the device, or this CPU's bfloat16 probe)


@dataclass
class _Clock:
    """Where a fit() is: its start, the speed measurements (train.time_limit_minutes) and token counts."""

    start: float
    first_step: int
    speed_from: tuple[int, float]  # (step, training seconds) where the speed is next measured from
    refit_every: float  # with a time limit: measure the speed this often (seconds)
    next_fit: float = math.inf  # from the first measurement, after 20 steps
    last_log: float = 0.0
    first_tokens: int = 0  # Trainer.tokens when this fit() began
    tokens_at_log: int = 0


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adafactor":  # no first moment: beta1 does not apply; fused q/k/v step block by block
        return BlockwiseAdafactor(groups, lr=cfg.lr, blocks=stacked_blocks(model))
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    try:  # the fused kernel updates all tensors in one pass (FSDP2's sharded ones too); older builds lack it on some devices
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


class Trainer:
    """Trains `model` on `task` as `cfg` says, checkpointing into `run_dir` (with `recipe` saved
    beside the weights as recipe.yaml, when given). resume: go on from the run's last checkpoint."""

    def __init__(self, model: torch.nn.Module, task, cfg: TrainConfig, run_dir: str | Path,
                 recipe: Recipe | None = None, resume: bool = False, log=print):
        self.task, self.cfg, self.recipe = task, cfg, recipe
        self.run_dir, self.resume = Path(run_dir), resume
        device = pick_device(cfg.device, "--set train.device=cpu")
        self.world = parallel.start_world(device)  # torchrun's processes, or this one alone
        self.log = log if self.world.main else _quiet
        self.device = parallel.device_for(device, self.world)
        self.amp_dtype, self.dtype_reason = choose_dtype(self.device, cfg.dtype, model.config.d_model)
        self.dtype = "bfloat16" if self.amp_dtype == torch.bfloat16 else "float32"
        self.log(f"precision: {self.dtype}{' autocast' if self.amp_dtype else ''} on {self.device.type} ({self.dtype_reason})")
        self.autocast = autocast(self.device, self.amp_dtype)
        if cfg.tensorboard and self.world.main:
            summary_writer()  # fail before any work when the package is missing
        if resume:
            ckpt.load_trainer_state(self.run_dir)  # fail early, before any work, if it cannot resume
        self.data = task.data
        self.model = model.to(self.device)
        self.model_config = self.model.config
        state = self._load_weights() if resume else None
        # with several processes: FSDP2 shards the model in place, or DDP wraps it (gradients averaged
        # over the processes); `stepped` is what the training steps call, evaluation sees the model
        self.sharded = self.world.launched and cfg.parallel == "fsdp"
        if self.sharded:
            if getattr(self.model, "lora", None) is not None:
                raise LmforgeError("train.parallel=fsdp does not shard a LoRA fine-tune (its adapter is small); use "
                                   "--set train.parallel=ddp")
            parallel.shard(self.model, self.device)
            if cfg.histograms_every:
                self.log("train.histograms_every: no histograms under FSDP2 (each process holds a slice of each tensor)")
        self.stepped = parallel.Replicated(self.model) if self.world.size > 1 and not self.sharded else self.model
        self.optimizer = make_optimizer(self.model, cfg)
        # train.compile: each Transformer layer compiled for the training steps (compiled at the first)
        layers = CompiledLayers(self.model) if should_compile(cfg.compile, self.device) else None
        self.compiled = layers if layers else None
        self.compile_pending = self.compiled is not None
        self.checkpointed = parallel.CheckpointedLayers(self.model) if cfg.activation_checkpointing else None
        self.step, self.tokens = 0, 0  # optimiser steps and token positions trained on, over every resume
        self.board: TensorBoardLog | None = None  # fit()'s TensorBoard writer (train.tensorboard)
        self.best: float | None = None  # the best headline metric so far (train.keep_best / patience)
        self.best_eval: dict | None = None  # the numbers of the evaluation that set it
        self.evals_without_gain = 0
        self.horizon = cfg.max_steps  # where the schedule ends; shrinks to fit train.time_limit_minutes
        if resume:
            self._restore(state)

    # --- state -----------------------------------------------------------------------------------
    def _state(self, optimizer: dict) -> dict:
        cfg = self.cfg
        state = {"optimizer": optimizer, "data": self.task.state_dict(),
                 "rng_cpu": torch.get_rng_state(), "evals_without_gain": self.evals_without_gain, "tokens": self.tokens}
        if self.best is not None:  # a resumed run keeps comparing against it (keep_best, patience)
            state["best"], state["best_eval"] = self.best, self.best_eval
        if self.horizon < cfg.max_steps:  # shrunk to fit the time limit
            state["horizon"] = self.horizon
            state["horizon_for"] = [cfg.max_steps, cfg.time_limit_minutes]
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _load_weights(self) -> dict:
        """The run's last weights into the model (before any sharding), and its trainer state."""
        from safetensors.torch import load_model

        state = ckpt.load_trainer_state(self.run_dir)
        if getattr(self.model, "lora", None) is not None:  # a LoRA run saved its adapter alone
            from lmforge.adapters import resume_adapter

            resume_adapter(self.model, self.run_dir)
        else:
            load_model(self.model, str(self.run_dir / "model.safetensors"), device=str(self.device))
        if not all(torch.isfinite(p).all() for p in self.model.state_dict().values() if p.is_floating_point()):
            raise LmforgeError(f"{self.run_dir / 'model.safetensors'} holds weights that are not finite numbers "
                               "(damaged, or saved from a diverged run), which training cannot go on from; restore "
                               "it from a copy or start a new run")
        return state

    def _restore(self, state: dict) -> None:
        """The optimiser, the data's place, the random state and the schedule of a resumed run."""
        if self.sharded:
            parallel.load_sharded_optimizer(self.model, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.task.load_state_dict(state["data"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.step, self.tokens = int(state["step"]), int(state.get("tokens", 0))
        self.best, self.best_eval = state.get("best"), state.get("best_eval")
        self.evals_without_gain = int(state.get("evals_without_gain", 0))
        # a run killed mid-way goes on along the schedule it had; one that ended at its time limit, or is
        # resumed with another max_steps or time limit, gets a schedule fitted afresh (it would train 0 steps)
        cfg = self.cfg
        if "horizon" in state and state.get("horizon_for") == [cfg.max_steps, cfg.time_limit_minutes] \
                and self.step < int(state["horizon"]):
            self.horizon = int(state["horizon"])

    def save(self) -> None:
        """The checkpoint, written by process 0 (with FSDP2 every process first sends it its shards)."""
        if self.sharded:
            weights, optimizer = parallel.gathered_state(self.model, self.optimizer)
            if not self.world.main:
                return
            model = build_model(self.model_config)
            model.load_state_dict(weights)
        elif not self.world.main:
            return
        else:
            model, optimizer = self.model, self.optimizer.state_dict()
        ckpt.save_checkpoint(self.run_dir, model, self.data.tokenizer, self.recipe, self._state(optimizer), self.step)

    # --- evaluation --------------------------------------------------------------------------------
    def evaluate(self, full: bool = False) -> dict:
        """The task's validation figures (loss and its metrics) on train.eval_batches batches, or on
        the whole validation split when `full`."""
        return self.task.evaluate(self.model, full, self.autocast)

    # --- the loop ------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to the end of the schedule, the time limit or early stopping; evaluate and save on the way."""
        cfg = self.cfg
        fresh = not any(p.name != LOCK_NAME for p in self.run_dir.iterdir()) if self.run_dir.is_dir() else True
        resumed_at = self.step if self.resume else None
        if cfg.tensorboard and self.world.main:
            self.board = TensorBoardLog(self.run_dir, resumed_at)
        metrics = MetricsLog(self.run_dir, resumed_at, sink=self.board) if self.world.main else NoMetrics()
        result = TrainResult(self.run_dir, self.step, n_params=self.model.num_params(),
                             flops_per_token=self.model.flops_per_token(), dtype=self.dtype,
                             dtype_reason=self.dtype_reason)
        result.best = dict(self.best_eval) if self.best_eval else None  # a resumed run's kept evaluation
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and self.world.main), unit="step",
                   dynamic_ncols=True, leave=False)
        try:
            if self.step == 0 and not self.resume:  # a run resumed at step 0 has its first checkpoint and row
                self._first_checkpoint(metrics, result, fresh)
            self.model.train()
            now = time.perf_counter()
            clock = _Clock(now, self.step, (self.step, 0.0), max(2.0, 0.05 * 60 * cfg.time_limit_minutes), last_log=now,
                           first_tokens=self.tokens, tokens_at_log=self.tokens)
            while self.step < self.horizon:
                if self._one_step(clock, metrics, result, bar):
                    break
        finally:
            bar.close()
            if self.board:
                self.board.close()
        result.seconds = time.perf_counter() - clock.start
        result.tokens_per_s = (self.tokens - clock.first_tokens) / max(result.seconds - result.eval_seconds - result.compile_seconds, 1e-9)
        result.steps = self.step
        result.stopped_early = self.step < cfg.max_steps
        if self.world.main:
            plot_losses(metrics.read(), self.run_dir / "loss.png", title=str(self.run_dir.name))
        parallel.barrier()  # every process then finds process 0's last checkpoint on disk
        return result

    def _first_checkpoint(self, metrics: MetricsLog, result: TrainResult, fresh: bool) -> None:
        """Score and save the untrained model (step 0); a failure here leaves no run directory behind
        when there was none (`fresh`: it held nothing, or only the lock)."""
        try:
            self._record_eval(metrics, result)
            self.save()
        except BaseException:
            if fresh and self.world.main and not ckpt.is_checkpoint(self.run_dir):
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def _one_step(self, clock: _Clock, metrics: MetricsLog, result: TrainResult, bar) -> bool:
        """One optimiser step, its log line and, when due, an evaluation and a save; True: stop here."""
        cfg = self.cfg
        if cfg.time_limit_minutes > 0 and (self.step == clock.first_step + 20 or time.perf_counter() >= clock.next_fit):
            self._refit(clock, result, bar)
        self._agree_on_horizon()
        lr = lr_at(self.step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=self._warmup(), total=self.horizon,
                   kind=cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = self._micro_batches()
        self.tokens += sum(map(batch_tokens, batches)) * self.world.size
        loss_sum = self._accumulate(batches, result)
        grad_norm = self._apply(loss_sum)
        self.step += 1
        bar.update(1)
        now = time.perf_counter()
        if self.step % cfg.log_every == 0 or self.step == self.horizon:
            tps = (self.tokens - clock.tokens_at_log) / max(now - clock.last_log, 1e-9)
            clock.last_log, clock.tokens_at_log = now, self.tokens
            metrics.write(step=self.step, loss=loss_sum, lr=lr, grad_norm=round(grad_norm, 6), tokens=self.tokens,
                          tokens_per_s=round(tps, 1), elapsed_s=round(now - clock.start, 2))
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tps:,.0f}")
        out_of_time = cfg.time_limit_minutes > 0 and now - clock.start > 60 * cfg.time_limit_minutes
        if cfg.time_limit_minutes > 0 and self.world.size > 1:  # process 0's clock decides for all
            out_of_time = bool(parallel.from_main(out_of_time)[0])
        t_eval = time.perf_counter()
        stop = self._checkpoint_due(self.step == self.horizon or out_of_time, clock, metrics, result, bar)
        result.eval_seconds += time.perf_counter() - t_eval
        clock.last_log += time.perf_counter() - t_eval  # keep the logged tokens/s about training
        if out_of_time:
            self.log(f"time limit of {cfg.time_limit_minutes} minutes reached at step {self.step}; saved")
        self._agree_on_horizon()
        return stop or out_of_time

    def _agree_on_horizon(self) -> None:
        """With a time limit and several processes, process 0's schedule end for all (each process's
        clock would fit its own), so that every process steps at the same learning rate and stops at
        the same step."""
        if self.cfg.time_limit_minutes > 0 and self.world.size > 1:
            self.horizon = int(parallel.from_main(self.horizon)[0])

    def _micro_batches(self) -> list[dict]:
        """This process's micro-batches of the step. The task hands out N x grad_accum of them (N
        processes) in the order one process with grad_accum x N would take them; process r takes
        numbers r, r + N, r + 2N, ..."""
        w, mine = self.world, []
        for i in range(self.cfg.grad_accum * w.size):
            batch = self.task.next_batch()
            if i % w.size == w.rank:
                mine.append({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})
        return mine

    def _apply(self, loss_sum: float) -> float:
        """Clip the gradients and step the optimiser, unless the loss or the gradient norm is not
        finite: then the step is refused and the run stops (Diverged), the weights untouched. Returns
        the gradient norm before clipping; draws the histograms when due (train.histograms_every)."""
        cfg = self.cfg
        what, value = "loss", loss_sum
        if math.isfinite(loss_sum):
            params = [p for p in self.model.parameters() if p.grad is not None]
            what, value = "gradient norm", parallel.clip_gradients(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            kept = ckpt.checkpoint_step(self.run_dir) if ckpt.is_checkpoint(self.run_dir) else None
            raise Diverged(what, value, self.step + 1, kept, self.run_dir)
        self.optimizer.step()
        every = cfg.histograms_every
        if self.board and every and (self.step + 1) % every == 0 and not self.sharded:
            self.board.histograms(self.model, self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        return value

    def _checkpoint_due(self, last: bool, clock: _Clock, metrics: MetricsLog, result: TrainResult, bar) -> bool:
        """Evaluate (and keep the best, or save) when due; True when patience has run out."""
        cfg = self.cfg
        if not (self.step % cfg.eval_every == 0 or last):
            if cfg.save_every and self.step % cfg.save_every == 0 and not cfg.keep_best:
                self.save()
            return False
        t_eval = time.perf_counter()
        self._record_eval(metrics, result, full=last)  # the final figure scores every token
        ev = result.evals[-1]
        improved = self._improved(ev)
        self.evals_without_gain = 0 if improved else self.evals_without_gain + 1
        if cfg.progress:
            head = self.task.headline
            bar.write(f"step {self.step}: val loss {ev['loss']:.4f}, {head} {ev[head]:.4f}"
                      + (" (best)" if improved and cfg.keep_best else ""))
        if cfg.keep_best:
            if improved:
                result.best = dict(ev)
                self.save()
        elif cfg.save_every == 0 or last:
            self.save()
        if cfg.time_limit_minutes > 0 and not last:  # measured again: a busy start misleads
            self._refit(clock, result, bar, time.perf_counter() - t_eval)
        if cfg.patience and self.evals_without_gain >= cfg.patience and not last:
            self.log(f"no better {self.task.headline} in {cfg.patience} evaluations; stopping early at "
                     f"step {self.step}")
            return True
        return False

    def _refit(self, clock: _Clock, result: TrainResult, bar, extra: float = 0.0) -> None:
        clock.speed_from = self._fit_schedule_to_time(clock.start, clock.speed_from,
                                                      result.eval_seconds + result.compile_seconds + extra, bar)
        clock.next_fit = time.perf_counter() + clock.refit_every

    def _accumulate(self, batches: list[dict], result: TrainResult) -> float:
        """Forward and backward over the step's micro-batches (gradients add up); their summed loss.
        The first compiled step is timed apart; if compiling fails, the step is redone without it."""
        if not self.compile_pending:
            return self._forward_backward(batches)
        self.compile_pending = False
        t = time.perf_counter()
        try:
            loss_sum = self._forward_backward(batches)
            result.compiled = True
        except Exception as e:  # the compiler's failures come in many types; the eager retry shows real errors
            self.optimizer.zero_grad(set_to_none=True)
            first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
            self.log(f"torch.compile failed here ({type(e).__name__}: {first[:200]}); training goes on without "
                     "it (--set train.compile=false skips the attempt)")
            self.compiled = None
            loss_sum = self._forward_backward(batches)
        result.compile_seconds = time.perf_counter() - t
        return loss_sum

    def _forward_backward(self, batches: list[dict]) -> float:
        """The summed loss of the step's micro-batches (the mean over the processes: each has its own)."""
        loss_sum = 0.0
        with contextlib.ExitStack() as layers:  # compiled, then checkpointed around that: each as asked
            for wrapping in (self.compiled, self.checkpointed):
                if wrapping:
                    layers.enter_context(wrapping.active())
            for i, batch in enumerate(batches):
                last = i == len(batches) - 1  # the gradients are averaged once, after the last micro-batch
                with parallel.gradient_sync(self.stepped, last):
                    with self.autocast():
                        loss = self.task.loss(self.stepped, batch) / len(batches)
                    loss.backward()
                loss_sum += loss.item()
        return parallel.mean_over_world(loss_sum)

    def _warmup(self) -> int:
        """The warmup steps: train.warmup_steps, shortened in proportion where the time limit has
        shortened the schedule (warmup_steps x horizon / max_steps), so that a run cut to a few steps
        still leaves warmup and anneals instead of ending while the learning rate still climbs."""
        cfg = self.cfg
        if self.horizon >= cfg.max_steps or cfg.warmup_steps == 0:
            return cfg.warmup_steps
        return max(1, round(cfg.warmup_steps * self.horizon / cfg.max_steps))

    def _fit_schedule_to_time(self, t_start: float, speed_from: tuple[int, float], eval_seconds: float,
                              bar) -> tuple[int, float]:
        """With a time limit, end the schedule (and the run) at the step the measured speed reaches in
        time, so the learning rate still anneals instead of being cut off mid-schedule. Called after
        20 steps, after every evaluation and every 5% of the time limit (2 s at least), each time with the speed
        since the last call, so a start slowed by another program is corrected later, and a slowdown
        later on shortens the schedule before the limit cuts it. The end moves (up to train.max_steps)
        only when it shifts by more than 5%: each move bends the learning-rate curve.

            seconds per step = training seconds since the last fit / steps since it
            end = step + (0.9 * limit - elapsed) / seconds per step     (10% kept for evaluations)

        Returns where the next measurement starts: (this step, training seconds so far)."""
        cfg = self.cfg
        now = time.perf_counter()
        trained = now - t_start - eval_seconds
        steps = self.step - speed_from[0]
        if steps <= 0:
            return speed_from
        per_step = max(trained - speed_from[1], 1e-9) / steps
        remaining = 60 * cfg.time_limit_minutes * 0.9 - (now - t_start)
        fits = min(cfg.max_steps, max(self.step + 1, self.step + int(remaining / per_step)))
        if abs(fits - self.horizon) > 0.05 * self.horizon:
            self.horizon = fits
            bar.total = self.horizon
            self.log(f"at the measured speed, {self.horizon} of {cfg.max_steps} steps fit in the time limit of "
                     f"{cfg.time_limit_minutes} minutes; the schedule now ends there")
        return self.step, trained

    def _improved(self, ev: dict) -> bool:
        value = ev[self.task.headline]
        better = self.best is None or (value > self.best if self.task.higher_is_better else value < self.best)
        if better:
            self.best = value
            self.best_eval = {k: v for k, v in ev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return better

    def _record_eval(self, metrics: MetricsLog, result: TrainResult, full: bool = False) -> None:
        ev = self.evaluate(full)
        self.model.train()
        ev["step"] = self.step
        result.evals.append(ev)
        first = {"dtype": self.dtype, "dtype_reason": self.dtype_reason} if self.step == 0 else {}  # the run's first row
        metrics.write(step=self.step, **first, **{f"val_{k}": v for k, v in ev.items() if isinstance(v, (int, float))
                                                  and k != "step"})


def _quiet(*args, **kwargs) -> None:
    """The log of torchrun's processes other than 0."""
