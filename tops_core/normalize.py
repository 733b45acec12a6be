"""Score normalisation as the paper's rule uses it."""

from __future__ import annotations

import numpy as np

from tops_core._validate import check_choice, pow2_scale

__all__ = ["normalize", "NORMS"]

NORMS = ("mean", "minmax")


def normalize(x, how: str = "mean") -> np.ndarray:
    """Normalise scores along the last axis, as the TOPS rule does each step.

    Parameters
    ----------
    x : array_like
        Scores, ``(..., N)``.
    how : {"mean", "minmax"}
        ``"mean"`` divides by the mean (the paper's algorithm boxes; an all-zero
        mean gives zeros). ``"minmax"`` maps to ``[0, 1]`` (the paper's text; a
        constant row gives zeros).

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape.

    Examples
    --------
    >>> import tops_core
    >>> tops_core.normalize([1.0, 2.0, 3.0]).tolist()
    [0.5, 1.0, 1.5]
    >>> tops_core.normalize([1.0, 2.0, 3.0], how="minmax").tolist()
    [0.0, 0.5, 1.0]
    """
    check_choice("how", how, NORMS)
    # Scaled by a power of two per row: sums and spans cannot overflow, and
    # every ratio keeps its bits (the scale cancels exactly).
    x = pow2_scale(np.asarray(x, dtype=np.float64), axis=-1)
    if how == "mean":
        mean = x.mean(axis=-1, keepdims=True)
        safe = np.where(mean == 0, 1.0, mean)
        return np.where(mean == 0, 0.0, x / safe)
    lo = x.min(axis=-1, keepdims=True)
    span = x.max(axis=-1, keepdims=True) - lo
    safe = np.where(span == 0, 1.0, span)
    return np.where(span == 0, 0.0, (x - lo) / safe)
