"""Chosen words' vectors drawn in two dimensions.

    pca   the two directions along which the chosen vectors vary most: centre the rows (X - mean),
          take the SVD X = U S V^T, and plot X V[:, :2] (exact, the same every time)
    tsne  t-SNE (van der Maaten and Hinton, 2008), scikit-learn's: keeps each word's nearest neighbours
          near, at the price of distances between far groups meaning little (the embed extra)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge.embed.vectors import WordVectors
from lmforge.errors import LmforgeError
from lmforge.interpret.attention import label_fonts, save_figure


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 2): the rows projected on their first two principal directions."""
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise LmforgeError("--projection tsne needs scikit-learn: pip install 'lmforge[embed]' (or use --projection "
                           "pca)") from None
    return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)


def plot_words(vectors: WordVectors, words: list[str], out: str | Path, projection: str = "pca",
               title: str | None = None) -> Path:
    """A PNG of `words` placed by their vectors' 2-D projection, each labelled."""
    if len(words) < 3:
        raise LmforgeError("a picture needs at least 3 words; give more with --words")
    x = np.stack([vectors.vector(w) for w in words])
    xy = pca_2d(x) if projection == "pca" else tsne_2d(x)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with label_fonts(words + [title or ""]):
        fig = Figure(figsize=(8, 6.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.scatter(xy[:, 0], xy[:, 1], s=14, color="tab:blue")
        for (px, py), w in zip(xy, words):
            ax.annotate(w, (px, py), xytext=(4, 3), textcoords="offset points", fontsize=10)
        ax.set_title(title or f"{len(words)} words, {projection.upper()} of {vectors.vectors.shape[1]}-d vectors")
        ax.set_xticks([])
        ax.set_yticks([])
        return save_figure(fig, out)
