"""Similarity matrices from token features."""

from __future__ import annotations

import numpy as np

from tops_core._validate import InvalidInputError, check_array_kind, check_memory, describe, pow2_scale

__all__ = ["cosine", "unit_rows"]

# Rows normalised per float64 chunk (bounds the temporary to _CHUNK * d floats).
_CHUNK = 4096


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) of the float array ``x`` scaled to unit L2 norm, in ``x``'s dtype.

    Norms are taken in ``x``'s dtype where that is safe (the bits every test
    and benchmark was run with); rows whose norm overflows or loses its
    digits to underflow are redone in float64 after an exact power-of-two
    scaling, so a float16 token with ``|x| = 400`` (whose square passes
    float16's 65504), a float64 one at ``1e200`` and a subnormal one all keep
    their direction. Zero rows stay zero.
    """
    info = np.finfo(x.dtype)
    with np.errstate(over="ignore", under="ignore"):
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        unit = x / np.where(norm == 0, 1, norm).astype(x.dtype)
    # norm**2 >= tiny / eps: no square that matters has underflowed.
    nonzero = np.abs(x).max(axis=-1, keepdims=True, initial=0) > 0
    risky = ~np.isfinite(norm) | ((norm < np.sqrt(info.tiny / info.eps)) & nonzero)
    rows = np.flatnonzero(risky.reshape(-1))
    if rows.size:
        flat, out = x.reshape(-1, x.shape[-1]), unit.reshape(-1, x.shape[-1])
        for start in range(0, rows.size, _CHUNK):
            pick = rows[start : start + _CHUNK]
            x64 = pow2_scale(flat[pick].astype(np.float64), axis=-1)
            n64 = np.sqrt(np.einsum("ij,ij->i", x64, x64))[:, None]
            out[pick] = x64 / np.where(n64 == 0, 1.0, n64)
    return np.ascontiguousarray(unit)


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

    check_array_kind("features", features)
    given = describe(features)
    x = to_numpy(features)
    if x.ndim not in (2, 3) or x.dtype.kind not in "fiu":
        raise InvalidInputError(f"features must be a real array of shape (N, d) or (B, N, d); got {given}")
    n = x.shape[-2]
    itemsize = 8 if x.dtype.kind != "f" else x.dtype.itemsize
    # The N x N result, its transpose-symmetrised copy and the shifted copy.
    check_memory(
        f"cosine of features with N = {n} tokens (the N x N similarity)",
        3.0 * itemsize * n * n * (x.shape[0] if x.ndim == 3 else 1),
    )
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidInputError(f"features must be finite (no NaN or inf); got {given} with NaN or inf")
    unit = unit_rows(x)
    cos = unit @ np.swapaxes(unit, -1, -2)
    np.clip(cos, -1.0, 1.0, out=cos)  # rounding can leave |cos| a hair above 1
    cos = (cos + np.swapaxes(cos, -1, -2)) / 2  # exact symmetry
    return (1 + cos) / 2 if shift else cos
