"""What a solver hands back to ``select``, and the online bound they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SolverResult", "top_sum"]


@dataclass(frozen=True)
class SolverResult:
    """Raw result of one solver on one problem (NumPy, unbatched)."""

    order: np.ndarray
    gains: np.ndarray
    upper_bound: float
    optimal: bool = False
    #: ``max_{i in S} s[j, i]`` for every row ``j`` when the solver has it (exact:
    #: a max never rounds), so the value need not re-read ``sim``.
    best: np.ndarray | None = None


def top_sum(values: np.ndarray, k: int) -> float:
    """Sum of the ``k`` largest non-negative entries of ``values``.

    Used in the online bound ``g(S) + sum of the k largest gains``: at most
    ``k`` tokens of an optimal set lie outside ``S``, and negative gains only
    lower the bound, so they are left out.
    """
    if k <= 0 or values.size == 0:
        return 0.0
    pos = values[values > 0]
    if pos.size > k:
        pos = np.partition(pos, pos.size - k)[pos.size - k:]
    return float(np.sort(pos).sum())
