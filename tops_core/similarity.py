"""Similarity matrices from token features."""

from __future__ import annotations

import numpy as np

from tops_core._validate import InvalidInputError, describe

__all__ = ["cosine"]


def cosine(features, *, shift: bool = True) -> np.ndarray:
    """Cosine similarity of L2-normalised token features.

    Parameters
    ----------
    features : array_like, shape (N, d) or (B, N, d)
        Token features (NumPy or array-like; framework tensors are copied to
        the host).
    shift : bool, default True
        Return ``(1 + cos) / 2`` in ``[0, 1]``, the non-negative form
        :func:`tops_core.select` requires (the TOPS and DivPrune rules are
        unchanged by it; SCOPE and DPP are not). ``False`` returns the raw cosine in ``[-1, 1]``.

    Returns
    -------
    numpy.ndarray, shape (N, N) or (B, N, N)
        In the features' float dtype (float64 for integers). Zero vectors get
        similarity 0 to everything (``0.5`` after the shift).
    """
    from tops_core._dispatch import to_numpy

    given = describe(features)
    x = to_numpy(features)
    if x.ndim not in (2, 3) or x.shape[-2] == 0 or x.dtype.kind not in "fiu":
        raise InvalidInputError(
            f"features must be a real array of shape (N, d) or (B, N, d) with N >= 1; got {given}"
        )
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidInputError(f"features must be finite (no NaN or inf); got {given} with NaN or inf")
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    unit = x / np.where(norm == 0, 1, norm).astype(x.dtype)
    cos = unit @ np.swapaxes(unit, -1, -2)
    np.clip(cos, -1.0, 1.0, out=cos)  # rounding can leave |cos| a hair above 1
    cos = (cos + np.swapaxes(cos, -1, -2)) / 2  # exact symmetry
    return (1 + cos) / 2 if shift else cos
