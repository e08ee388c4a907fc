"""Progress on the terminal and metrics on disk: `metrics.jsonl` (one JSON object a line), a
loss-curve PNG drawn from it at the end of a run, and `lmforge plot`'s picture of several runs. All
are written through `lmforge.io`, so a symlink planted in the run directory is replaced, never
written through."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.io import append_line, atomic_path, atomic_write


class MetricsLog:
    """metrics.jsonl; each row also goes to `sink` (train/tensorboard.py) when one is given."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, sink=None):
        self.path, self.sink = Path(run_dir) / "metrics.jsonl", sink
        rows = [] if resume_step is None else [r for r in self.read() if r.get("step", 0) <= resume_step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in rows))  # a killed run's later rows dropped

    def write(self, **row) -> None:
        append_line(self.path, json.dumps(row))
        if self.sink is not None:
            self.sink.write(row)

    def read(self) -> list[dict]:
        return read_metrics(self.path)


class NoMetrics:
    """metrics.jsonl for torchrun's processes other than 0: process 0 writes it."""

    def write(self, **row) -> None:
        pass

    def read(self) -> list[dict]:
        return []


def read_metrics(path: Path) -> list[dict]:
    """Every row of a metrics.jsonl; a line that is not whole JSON (the run was killed while writing
    it, or the disk filled up) is skipped."""
    if not path.is_file() or path.is_symlink():  # a planted link is not this run's log
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def plot_losses(metrics: list[dict], out: Path, title: str = "") -> Path | None:
    """Training and validation loss against step, saved as a PNG."""
    plt = _pyplot()
    if plt is None:
        return None
    train = [(r["step"], r["loss"]) for r in metrics if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in metrics if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", markersize=3)
    _finish(plt, fig, ax, "step", "loss (nats per token)", title, out)
    return out


def plot_runs(runs: list[str | Path], out: str | Path, metric: str = "val_loss", x: str = "step") -> dict:
    """One metric of several runs' metrics.jsonl in one PNG, against the optimiser step or the tokens
    trained on (`x="tokens"`: a validation row's count is read off the training rows around it,
    linearly between two logged counts). Returns {"out", "metric", "x", "runs": [{"run", "points"}]}."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise LmforgeError(f"--out {out} is not a .png file; name one, e.g. --out curves.png")
    if x not in ("step", "tokens"):
        raise LmforgeError(f"--x {x} is not an axis lmforge plots; use step or tokens")
    curves = [{"run": str(run), "points": _curve(Path(run), metric, x)} for run in runs]
    plt = _pyplot()
    if plt is None:
        raise LmforgeError("lmforge plot needs matplotlib; install it with pip install matplotlib")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    names = [Path(c["run"]).name for c in curves]
    for c, name in zip(curves, names):
        label = c["run"] if names.count(name) > 1 else name  # two runs of one name: their paths
        ax.plot(*zip(*c["points"]), label=label, linewidth=1.2, marker="o" if len(c["points"]) < 30 else None,
                markersize=3)
    _finish(plt, fig, ax, "tokens trained on" if x == "tokens" else "step", metric, f"{metric} by {x}", out)
    return {"out": str(out), "metric": metric, "x": x, "runs": curves}


def _curve(run: Path, metric: str, x: str) -> list[list[float]]:
    """(x, metric) of every row of `run` that logs `metric`, in step order."""
    rows = sorted((r for r in read_metrics(run / "metrics.jsonl") if _number(r.get("step"))), key=lambda r: r["step"])
    if not rows:
        raise LmforgeError(f"{run} has no metrics.jsonl to plot; give a run directory that lmforge trained "
                           "(lmforge train or finetune write one)")
    logged = sorted({k for r in rows for k, v in r.items() if _number(v) and k not in ("step", "elapsed_s")})
    if metric not in logged:
        raise LmforgeError(f"{run} logs no {metric!r}; choose --metric from {', '.join(logged)}")
    points = [(r["step"], r[metric]) for r in rows if _number(r.get(metric))]
    if x == "step":
        return [[step, value] for step, value in points]
    counts = [(0, 0)] + [(r["step"], r["tokens"]) for r in rows if _number(r.get("tokens"))]
    if len(counts) == 1:
        raise LmforgeError(f"{run}'s metrics.jsonl has no token counts (it was written before lmforge logged "
                           "them); plot it with --x step")
    steps, tokens = zip(*counts)
    return [[float(np.interp(step, steps, tokens)), value] for step, value in points]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _finish(plt, fig, ax, xlabel: str, ylabel: str, title: str, out: Path) -> None:
    """Label the axes and save the figure to `out` atomically (a planted link is replaced)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
