"""Reusable test tools: hypothesis strategies on a dyadic grid and a brute-force oracle.

Values are multiples of 1/8, so sums of a few of them are exact in float32 and
float64: answers can be compared across NumPy, PyTorch and MLX without
tolerance. Importing this module needs ``hypothesis`` (the ``test`` extra).

Examples
--------
>>> from hypothesis import given
>>> from tops_core.testing import problems
>>> @given(problems(max_n=6))
... def test_indices_sorted(problem):
...     scores, sim, k = problem
...     ...
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st

from tops_core.objective import Objective

__all__ = ["dyadic_arrays", "problems", "objectives", "brute_force", "GRID", "FOCI"]

#: The grid step of every drawn value.
GRID = 0.125


def dyadic_arrays(shape, *, max_value: float = 2.0, dtype=np.float64):
    """Strategy: arrays of ``shape`` with entries in ``{0, 1/8, ..., max_value}``."""
    top = round(max_value / GRID)
    size = int(np.prod(shape))
    return st.lists(st.integers(0, top), min_size=size, max_size=size).map(
        lambda v: (np.array(v, dtype=np.float64).reshape(shape) * GRID).astype(dtype)
    )


@st.composite
def problems(
    draw,
    *,
    min_n: int = 1,
    max_n: int = 8,
    batch: int | None = None,
    symmetric: bool = True,
    dtype=np.float64,
    min_k: int = 0,
):
    """Strategy: ``(scores, sim, k)`` on the dyadic grid.

    Parameters
    ----------
    min_n, max_n : int
        Range of the token count ``N``.
    batch : int, optional
        Draw batched ``(B, N)`` / ``(B, N, N)`` problems with this ``B``.
    symmetric : bool, default True
        Whether ``sim`` is symmetric.
    dtype : numpy dtype, default float64
    min_k : int, default 0
        Smallest budget (``k`` is drawn in ``[min_k, N]``).
    """
    n = draw(st.integers(max(min_n, min_k, 1), max_n))
    lead = () if batch is None else (batch,)
    scores = draw(dyadic_arrays((*lead, n), dtype=dtype))
    sim = draw(dyadic_arrays((*lead, n, n), max_value=1.0, dtype=dtype))
    if symmetric:
        upper = np.triu(sim)
        sim = upper + np.swapaxes(np.triu(sim, 1), -1, -2)
    k = draw(st.integers(min_k, n))
    return scores, sim, k


#: Focus values :func:`objectives` draws by default.
FOCI = (0.0, 0.25, 0.5, 1.0)


@st.composite
def objectives(draw, *, monotone: bool | None = None, focus: float | Sequence[float] | None = None):
    """Strategy: :class:`~tops_core.Objective` with dyadic weights.

    Parameters
    ----------
    monotone : bool, optional
        ``True`` draws ``redundancy = 0``; ``False`` draws it positive; the
        default draws either.
    focus : float or sequence of float, optional
        The focus ``beta``: one value, or the values to draw from (default
        :data:`FOCI`). ``focus=0.0`` keeps every coverage weight at 1, so
        float32 sums stay exact on the dyadic grid: with ``focus > 0`` the
        weights ``r_j / mean(r)`` are not dyadic, and frameworks that sum in
        float32 differ from the core's float64 in the last bits.
    """
    weight = st.integers(0, 8).map(lambda v: v * GRID)
    if monotone is None:
        redundancy = draw(weight)
    elif monotone:
        redundancy = 0.0
    else:
        redundancy = draw(st.integers(1, 8).map(lambda v: v * GRID))
    foci = FOCI if focus is None else (focus,) if isinstance(focus, (int, float)) else tuple(focus)
    return Objective(
        relevance=draw(weight),
        coverage=draw(weight),
        redundancy=redundancy,
        focus=draw(st.sampled_from(foci)),
    )


def brute_force(objective: Objective, scores, sim, k: int) -> tuple[float, np.ndarray]:
    """Exact optimum by enumerating every ``k``-subset (tiny ``N`` only).

    Returns
    -------
    value : float
        ``max_{|T| = k} f(T)``.
    indices : numpy.ndarray
        A maximiser (the first in lexicographic order).
    """
    scores = np.asarray(scores)
    sim = np.asarray(sim)
    n = scores.shape[0]
    if n > 16:
        raise ValueError(f"brute_force enumerates C(N, k) subsets and accepts N <= 16; got N = {n}")
    best, best_set = -np.inf, np.zeros(0, dtype=np.int64)
    for subset in itertools.combinations(range(n), k):
        idx = np.array(subset, dtype=np.int64)
        value = objective.value_of(scores, sim, idx)
        if value > best:
            best, best_set = value, idx
    return float(best), best_set
