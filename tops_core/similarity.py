"""Similarity matrices from token features."""

from __future__ import annotations

import numpy as np

from tops_core._validate import InvalidInputError, check_array_kind, check_memory, describe, pow2_scale

__all__ = ["cosine", "unit_rows"]

# Rows normalised per float64 chunk (bounds the temporary to _CHUNK * d floats).
_CHUNK = 4096


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) of the float array ``x`` scaled to unit L2 norm, in ``x``'s dtype.

    Each row is first scaled by a power of two (exact) and its norm taken in
    float64, so no magnitude overflows or vanishes: a float16 token with
    ``|x| = 400`` (whose square passes float16's 65504), a float64 one at
    ``1e200`` and a subnormal one all keep their direction. Zero rows stay zero.
    """
    flat = x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1])
    out = np.empty(flat.shape, dtype=x.dtype)
    for start in range(0, flat.shape[0], _CHUNK):
        x64 = pow2_scale(flat[start:start + _CHUNK].astype(np.float64), axis=-1)
        norm = np.sqrt(np.einsum("ij,ij->i", x64, x64))[:, None]
        out[start:start + _CHUNK] = x64 / np.where(norm == 0, 1.0, norm)
    return out.reshape(x.shape)


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
        raise InvalidInputError(
            f"features must be a real array of shape (N, d) or (B, N, d); got {given}"
        )
    n = x.shape[-2]
    itemsize = 8 if x.dtype.kind != "f" else x.dtype.itemsize
    # The N x N result, its transpose-symmetrised copy and the shifted copy.
    check_memory(f"cosine of features with N = {n} tokens (the N x N similarity)",
                 3.0 * itemsize * n * n * (x.shape[0] if x.ndim == 3 else 1))
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidInputError(f"features must be finite (no NaN or inf); got {given} with NaN or inf")
    unit = unit_rows(x)
    cos = unit @ np.swapaxes(unit, -1, -2)
    np.clip(cos, -1.0, 1.0, out=cos)  # rounding can leave |cos| a hair above 1
    cos = (cos + np.swapaxes(cos, -1, -2)) / 2  # exact symmetry
    return (1 + cos) / 2 if shift else cos
