"""Pictures: what each method keeps (kept patches bright, pruned ones dimmed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

__all__ = ["overlay", "relevance_map", "save_panels"]

_DIM = 0.22  # brightness left to pruned patches


def overlay(image: np.ndarray, kept: np.ndarray, side: int) -> np.ndarray:
    """``image`` with the patches not in ``kept`` dimmed (row-major ``side x side`` grid)."""
    mask = np.full(side * side, _DIM, dtype=np.float32)
    mask[kept] = 1.0
    patch = image.shape[0] // side
    scale = np.kron(mask.reshape(side, side), np.ones((patch, patch), dtype=np.float32))
    return image * scale[..., None]


def relevance_map(image: np.ndarray, relevance: np.ndarray, side: int) -> np.ndarray:
    """The image under a heat map of relevance (yellow = most CLS attention)."""
    from matplotlib import colormaps

    level = relevance / relevance.max() if relevance.max() > 0 else relevance
    level = np.sqrt(level)  # attention is heavy-tailed: a root shows more than the peak
    patch = image.shape[0] // side
    heat = colormaps["inferno"](np.kron(level.reshape(side, side), np.ones((patch, patch))))[..., :3]
    grey = image.mean(axis=2, keepdims=True)
    return (0.35 * grey + 0.65 * heat).astype(np.float32)


def save_panels(
    path: Path,
    image: np.ndarray,
    relevance: np.ndarray,
    side: int,
    rows: list[tuple[str, dict[str, np.ndarray], dict[str, str]]],
    title: str,
) -> None:
    """One PNG: a row per budget, the relevance map then one panel per method.

    ``rows`` holds ``(row label, {method: kept indices}, {method: caption})``.
    The PNG is palette-quantised (192 colours) to stay small.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    methods = list(rows[0][1])
    ncols = len(methods) + 1
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.55 * ncols, 1.85 * len(rows)), squeeze=False)
    for r, (label, kept_by_method, captions) in enumerate(rows):
        axes[r, 0].imshow(relevance_map(image, relevance, side))
        axes[r, 0].set_title("CLS attention", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
        for c, method in enumerate(methods, start=1):
            axes[r, c].imshow(overlay(image, kept_by_method[method], side))
            axes[r, c].set_title(f"{method}\n{captions[method]}", fontsize=6.5)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(192).save(path, optimize=True)
