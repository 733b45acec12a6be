"""What a solver hands back to ``select``, and the certificate's shared steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tops_core.selection import Selection

__all__ = ["SolverResult", "top_sum", "CLOSES_RTOL", "certificate", "certified_selection"]

#: A bound within this relative gap of the value certifies the set as optimal
#: (the value and the bound are sums of the same float64 gains, rounded apart).
CLOSES_RTOL = 1e-12


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
        pos = np.partition(pos, pos.size - k)[pos.size - k :]
    return float(np.sort(pos).sum())


def certificate(value: float, bound: float) -> tuple[float, bool]:
    """The certificate of a set of value ``value``: ``(upper_bound, closes)``.

    The bound is never below the value (rounding may put it there when the set
    is optimal); ``closes`` says whether it meets the value within
    :data:`CLOSES_RTOL`, which proves the set optimal.
    """
    bound = max(float(bound), value)
    return bound, bound - value <= CLOSES_RTOL * max(1.0, abs(bound))


def certified_selection(
    order: np.ndarray, gains: np.ndarray, value: float, bound: float, method: str, proven: bool
) -> Selection[np.ndarray]:
    """The NumPy :class:`~tops_core.Selection` of a set in pick order, with its certificate.

    ``proven`` says the set is optimal whatever the bound (an exact solve, or ``k = N``);
    otherwise it is optimal when the bound closes (:func:`certificate`).
    """
    bound, closes = certificate(value, bound)
    return Selection(
        indices=np.sort(order),
        order=order,
        gains=gains,
        value=value,
        upper_bound=bound,
        method=method,
        optimal=bool(proven or closes),
    )
