"""Fast greedy MAP inference for a DPP (Chen, Zhang and Zhou, NeurIPS 2018)."""

from __future__ import annotations

import numpy as np

__all__ = ["dpp_greedy_map"]


def dpp_greedy_map(quality: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
    """Greedy MAP of the DPP with kernel ``L = diag(q) S diag(q)``, as CDPruner runs it.

    Incremental Cholesky: each step adds the token with the largest residual
    variance ``d_i^2`` (the gain in ``log det L_S``), ``O(N k^2)`` in all. When
    the residuals of every candidate reach zero (the kernel's rank is used up)
    the remaining picks keep going by largest residual, ties to the lowest index,
    so ``k`` tokens always come back.

    Parameters
    ----------
    quality : numpy.ndarray, shape (N,)
        Per-token quality ``q`` (CDPruner: min-max normalised relevance).
    sim : numpy.ndarray, shape (N, N)
        Symmetric positive semi-definite similarity ``S``.
    k : int
        Number of tokens.

    Returns
    -------
    numpy.ndarray of int64, shape (k,)
        Pick order.
    """
    n = quality.shape[0]
    q = quality.astype(np.float64)
    s = sim.astype(np.float64)
    residual = q * np.diagonal(s) * q
    chol = np.zeros((k, n), dtype=np.float64)
    chosen = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    for t in range(k):
        # Among the candidates only (a residual driven to -inf or NaN by rounding
        # must not bring back a chosen token); NaN counts as -inf.
        cand = np.flatnonzero(~chosen)
        res = residual[cand]
        j = int(cand[np.argmax(np.where(np.isnan(res), -np.inf, res))])
        order[t] = j
        chosen[j] = True
        if t == k - 1:
            break
        if residual[j] > 0:
            row = q[j] * s[j] * q
            e = (row - chol[:t, j] @ chol[:t]) / np.sqrt(residual[j])
            chol[t] = e
            residual = residual - e * e
    return order
