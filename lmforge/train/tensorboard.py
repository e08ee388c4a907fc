"""TensorBoard event files for a run (`train.tensorboard=true`): every row the run writes to
metrics.jsonl also becomes scalars in the run directory's event files, and on request
(`train.histograms_every=N`) histograms of every trained weight and its gradient.
`tensorboard --logdir runs/` shows every run under runs/, each named by its directory.

Tags follow the metrics.jsonl keys: a validation figure `val_X` is `val/X`, every other number of
a training row (loss, lr, grad_norm, tokens_per_s, tokens) is `train/<key>`; the x axis is the
optimiser step. A resumed run opens its writer with `purge_step` = the checkpoint's step + 1: the
killed run's events past its last checkpoint are hidden, and the curve goes on from the checkpoint
without a step twice (a fresh run purges from step 0, hiding any earlier run's files in the folder).
TensorBoard applies the purge in file-name order, so a new writer's file is opened in a later
second than the folder's other files (after_earlier_files).

The `tensorboard` package is an extra: pip install 'lmforge[monitor]'.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lmforge.errors import LmforgeError

SKIPPED = ("step", "elapsed_s")  # the x axis itself, and wall time (TensorBoard records its own)


def tag_for(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key: val_loss -> val/loss, grad_norm -> train/grad_norm."""
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


def summary_writer():
    """torch's SummaryWriter class, or an error that says how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LmforgeError("train.tensorboard=true needs the tensorboard package; install it with "
                           "pip install 'lmforge[monitor]' (or set train.tensorboard=false)") from None
    return SummaryWriter


def after_earlier_files(run_dir: Path) -> None:
    """Wait (under a second) until this second is later than any event file's in `run_dir`. TensorBoard
    reads a folder's files in name order, which starts with the whole second a file was opened in; a
    resumed run's file must come after the killed run's, or its purge step would be read first and
    the killed run's points after it would stay."""
    seconds = [int(p.name.split(".")[3]) for p in run_dir.glob("events.out.tfevents.*")
               if len(p.name.split(".")) > 4 and p.name.split(".")[3].isdigit()]
    while seconds and int(time.time()) <= max(seconds) <= time.time() + 1:  # a clock set back: no wait
        time.sleep(0.05)


class TensorBoardLog:
    """The writer of one fit(): `write(row)` for each metrics row, `histograms(model, step)`, `close()`."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        # each writer opens a file of its own (time, host, process and a counter in its name): nothing is written through
        after_earlier_files(Path(run_dir))
        self.writer = summary_writer()(log_dir=str(run_dir), purge_step=0 if resume_step is None else resume_step + 1,
                                       flush_secs=30)

    def write(self, row: dict) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag_for(key), value, step)
        if any(key.startswith("val_") for key in row):  # an evaluation: on disk for whoever watches
            self.writer.flush()

    def histograms(self, model: torch.nn.Module, step: int) -> None:
        """weights/<name> and grads/<name> of every trained tensor (the gradient after clipping)."""
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), step)
            if p.grad is not None:
                self.writer.add_histogram(f"grads/{name}", p.grad.detach().float().cpu(), step)

    def close(self) -> None:
        self.writer.close()

