"""Numba kernels on a whole similarity: its transpose and the max over a set of its columns.

Imported only when Numba is installed (through :mod:`tops_core._numba`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def transpose(a):
    """Blocked transpose into a new C-contiguous array (cache-friendly tiles)."""
    n0, n1 = a.shape
    out = np.empty((n1, n0), dtype=a.dtype)
    tile = 64
    for i0 in range(0, n0, tile):
        i1 = min(i0 + tile, n0)
        for j0 in range(0, n1, tile):
            j1 = min(j0 + tile, n1)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    out[j, i] = a[i, j]
    return out


@njit(cache=True, nogil=True)
def max_over_columns(sim, idx):
    """``best_j = max_{i in idx} sim[j, i]`` as float64 (idx non-empty)."""
    n = sim.shape[0]
    out = np.empty(n)
    for j in range(n):
        row = sim[j]
        best = row[idx[0]]
        for t in range(1, idx.shape[0]):
            v = row[idx[t]]
            if v > best:
                best = v
        out[j] = best
    return out
