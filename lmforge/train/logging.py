"""Progress on the terminal and metrics on disk: `metrics.jsonl` (one JSON object a line) and a
loss-curve PNG drawn from it at the end of a run. Both are written through `lmforge.io`, so a
symlink planted in the run directory is replaced, never written through."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.io import append_line, atomic_path, atomic_write


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        rows = [] if resume_step is None else [r for r in self.read() if r.get("step", 0) <= resume_step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in rows))  # a killed run's later rows dropped

    def write(self, **row) -> None:
        append_line(self.path, json.dumps(row))

    def read(self) -> list[dict]:
        """Every row; a line that is not whole JSON (the run was killed while writing it, or the disk
        filled up) is skipped."""
        if not self.path.is_file() or self.path.is_symlink():  # a planted link is not this run's log
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows


def plot_losses(metrics: list[dict], out: Path, title: str = "") -> Path | None:
    """Training and validation loss against step, saved as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [(r["step"], r["loss"]) for r in metrics if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in metrics if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out
