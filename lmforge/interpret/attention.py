"""Attention maps: the softmax(Q K^T / sqrt(d_k) + M) weights of every layer and head, and heatmaps.

Layers and heads are numbered from 0. A map is (T, S): row t is how query token t spreads its
attention over the S key tokens, so every row sums to 1 (in a causal model, keys after t get 0).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.io import atomic_path
from lmforge.tokenizer import CJK_WIDE

CJK = re.compile(f"[{CJK_WIDE}]")  # text that needs a CJK font

# Fonts that cover CJK, best first: Linux packages, then the macOS and Windows system fonts.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR",
             "Source Han Sans SC", "Source Han Sans CN", "Source Han Sans", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN", "AR PL UKai CN", "AR PL SungtiL GB",
             "Noto Serif CJK SC", "PingFang SC", "Hiragino Sans GB", "Heiti SC", "STHeiti", "Microsoft YaHei",
             "SimHei", "SimSun", "Arial Unicode MS")
_CJK_FILES = re.compile(r"cjk|wqy|droidsansfallback|uming|ukai|gkai|sourcehan|simhei|simsun|msyh|pingfang|hiragino",
                        re.IGNORECASE)
NO_CJK_FONT = ("labels contain CJK characters but no CJK font is installed, so they may show as boxes; "
               "install one (e.g. `apt install fonts-noto-cjk` or `fonts-wqy-microhei`) and plot again")


@functools.cache
def find_cjk_font() -> str | None:
    """The family name of an installed font that covers CJK, or None.

    Looks in matplotlib's font list first; its cache predates fonts installed since, so the system
    font folders are then searched for files that look like CJK fonts, which are added to the list.
    """
    from matplotlib import font_manager

    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        listed = next((name for name in CJK_FONTS if name in names), None)
        return listed or next((name for name in sorted(names) if "CJK" in name), None)

    if (name := known()) is not None:
        return name
    have = {f.fname for f in font_manager.fontManager.ttflist}
    for fname in font_manager.findSystemFonts():
        if fname not in have and _CJK_FILES.search(os.path.basename(fname).replace("-", "").replace("_", "")):
            try:
                font_manager.fontManager.addfont(fname)
            except (OSError, RuntimeError, ValueError):  # skip a file matplotlib cannot read
                continue
    return known()


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG at `path` through the atomic writer: never half a file."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return Path(path)


def heatmap(values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], path: str | os.PathLike,
            title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
            cell_format: str | None = None, cmap: str = "viridis") -> Path:
    """A labelled (rows, cols) heatmap as a PNG: labels on both axes (x labels rotated), optional
    values written in the cells, a colour bar. CJK labels get a CJK font when one is installed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    R, C = values.shape
    with label_fonts([*row_labels, *col_labels, title or "", xlabel or "", ylabel or ""]):
        fig = Figure(figsize=(min(2.0 + 0.45 * C, 40.0), min(1.5 + 0.4 * R, 40.0)))
        FigureCanvasAgg(fig)  # render with Agg whatever backend pyplot may have chosen
        ax = fig.add_subplot()
        im = ax.imshow(values, cmap=cmap, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.set_xticks(range(C), [str(s) for s in col_labels], rotation=60, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(R), [str(s) for s in row_labels])
        if cell_format is not None:
            mid = (np.nanmax(values) + np.nanmin(values)) / 2 if values.size else 0.0
            for i in range(R):
                for j in range(C):  # dark text on light cells, light on dark
                    ax.text(j, i, cell_format.format(values[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if values[i, j] > mid else "black")
        if title:
            ax.set_title(title)
        if xlabel:
            ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        return save_figure(fig, path)


@contextlib.contextmanager
def label_fonts(texts: Sequence[str]):
    """Fonts for a figure whose labels are `texts`: DejaVu Sans, and a CJK font after it when a label
    needs one (matplotlib falls back glyph by glyph); one warning after, not one per glyph, when a
    label needs a CJK font that is not installed."""
    from matplotlib import rc_context

    cjk = any(CJK.search(str(s)) for s in texts)
    font = find_cjk_font() if cjk else None
    rc = {"font.family": ["DejaVu Sans"] + ([font] if font else [])}  # named: a generic family gives one font
    with rc_context(rc), warnings.catch_warnings():
        if cjk and font is None:
            warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield
    if cjk and font is None:
        warnings.warn(NO_CJK_FONT, stacklevel=4)


def plot_attention(weights, query_tokens: Sequence[str], key_tokens: Sequence[str], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """Heatmap of one (T, S) attention map: query tokens down the side, key tokens along the bottom."""
    w = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights, float)
    if w.ndim != 2:
        raise LmforgeError(f"an attention map must be (queries, keys) but this one has shape {tuple(w.shape)}; "
                           "pick one layer and head with select(weights, layer, head)")
    if w.shape != (len(query_tokens), len(key_tokens)):
        raise LmforgeError(f"the map is {w.shape[0]} x {w.shape[1]} but there are {len(query_tokens)} query and "
                           f"{len(key_tokens)} key tokens; pass one token per row and per column")
    return heatmap(w, query_tokens, key_tokens, path, title=title, xlabel="key", ylabel="query")


@torch.no_grad()
def attention_maps(model: nn.Module, ids: torch.Tensor, **forward_kwargs) -> list[torch.Tensor]:
    """Every layer's attention weights for `ids` (B, T): a list (one per layer) of (B, H, T, S).

    Runs `model(ids, need_weights=True, ...)` in eval mode (no dropout on the weights), then puts
    the model back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(ids, need_weights=True, **forward_kwargs)
    finally:
        model.train(was_training)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list)):
        raise LmforgeError(f"{type(model).__name__} did not return attention weights; "
                           "use a model whose forward takes need_weights=True and returns (output, weights)")
    return [w.detach() for w in out[1]]


def select(weights: Sequence[torch.Tensor], layer: int, head: int | None, row: int = 0) -> torch.Tensor:
    """The (T, S) map of one layer and head (0-based) for batch row `row`; head=None averages the heads."""
    L = len(weights)
    if not 0 <= layer < L:
        raise LmforgeError(f"layer {layer} does not exist; the model has {L} layers (0-{L - 1})")
    w = weights[layer]  # (B, H, T, S)
    B, H = w.shape[:2]
    if not 0 <= row < B:
        raise LmforgeError(f"batch row {row} does not exist; the batch has {B} rows (0-{B - 1})")
    if head is None:
        return w[row].mean(dim=0)
    if not 0 <= head < H:
        raise LmforgeError(f"head {head} does not exist; layer {layer} has {H} heads (0-{H - 1})")
    return w[row, head]
