"""The preservation-set objective: defined once, used by every solver.

For relevance ``r`` (N,), non-negative similarity ``s`` (N, N) and weights
``a, b, c >= 0``, ``0 <= beta <= 1``::

    f(S) = a * sum_{i in S} r_i
         + b * sum_j w_j * max_{i in S} s[j, i]
         - c * sum_{i < j in S} s[i, j]

    w_j = (1 - beta) + beta * r_j / mean(r)

with ``f(empty) = 0``. Solvers never re-derive the formula: the value is
:meth:`Objective.value_from`, a gain is :meth:`Objective.step_gains` of a
coverage gain reduced by :func:`lane_sum` (NumPy) or by the compiled gain layer
:mod:`tops_core._gain_kernels`, which reproduces it bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tops_core._dispatch import to_numpy
from tops_core._numba import fast_for, matrix_kernels
from tops_core._validate import (
    InvalidInputError,
    check_array_kind,
    check_magnitudes,
    check_memory,
    check_problem_extremes,
    check_weight,
    pow2_scale,
)

__all__ = ["Objective", "ObjectiveState", "lane_sum", "lane_tree", "LANES"]

# Rows of the gain kernel evaluated per block: bounds the float64 temporary to
# _BLOCK * N values without changing any result (each row is reduced on its own).
_BLOCK = 256

#: Lanes of the canonical coverage reduction (see :func:`lane_sum`).
LANES = 8


def lane_sum(terms: np.ndarray) -> np.ndarray:
    """The canonical float64 reduction of every gain: 8 interleaved running sums.

    Row ``i`` of ``terms`` (shape ``(B, N)``) is reduced as lane sums
    ``L_l = (((t_l + t_{l+8}) + t_{l+16}) + ...)`` taken in ascending order,
    then ``((L_0 + L_1) + (L_2 + L_3)) + ((L_4 + L_5) + (L_6 + L_7))``. The
    order is fixed by definition (not left to NumPy's pairwise summation), so
    the Numba kernels reproduce every gain bit for bit, whatever the block
    size or the access pattern (row streaming or column reads).
    """
    b, n = terms.shape
    n8 = n - n % LANES
    lanes = terms[:, :n8].reshape(b, n8 // LANES, LANES).sum(axis=1)  # sequential per lane
    if n8 < n:
        lanes[:, : n - n8] += terms[:, n8:]
    return lane_tree(lanes.T)


def lane_tree(lanes) -> np.ndarray:
    """The fixed tree that ends the canonical reduction, over 8 lane arrays (``lanes[l]``)."""
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


@dataclass(frozen=True)
class Objective:
    """The preservation-set objective ``f`` (relevance bonus, weighted coverage, redundancy).

    Parameters
    ----------
    relevance : float, default 0.0
        ``a``, weight of the modular bonus ``sum_{i in S} r_i``. Off by default:
        on real ViT tokens a bonus balanced against coverage at the first step
        dominates every later step, and the selection collapses to top-k by
        attention.
    coverage : float, default 1.0
        ``b``, weight of the relevance-weighted coverage
        ``sum_j w_j max_{i in S} s[j, i]`` (facility location). Monotone
        submodular for any ``focus``.
    redundancy : float, default 0.0
        ``c``, weight of the pairwise penalty ``sum_{i<j in S} s[i, j]``. With
        ``c > 0`` the objective stays submodular but is no longer monotone, and
        ``sim`` must be symmetric.
    focus : float, default 0.5
        ``beta`` in ``[0, 1]``: coverage row weights
        ``w_j = (1 - beta) + beta * r_j / mean(r)`` (mean weight 1). ``0`` gives
        plain coverage, ``1`` weights tokens purely by relevance. Needs
        ``r >= 0`` when positive; an all-zero ``r`` gives uniform weights.

    Examples
    --------
    >>> import numpy as np, tops_core
    >>> sim = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> obj = tops_core.Objective(focus=0.0)
    >>> obj.value(np.ones(3), sim, [0, 2])
    2.5
    """

    relevance: float = 0.0
    coverage: float = 1.0
    redundancy: float = 0.0
    focus: float = 0.5

    def __post_init__(self) -> None:
        for name in ("relevance", "coverage", "redundancy"):
            object.__setattr__(self, name, check_weight(name, getattr(self, name)))
        object.__setattr__(self, "focus", check_weight("focus", self.focus, upper=1.0))

    # ------------------------------------------------------------------ facts
    @property
    def needs_symmetric(self) -> bool:
        """Whether ``sim`` must be symmetric (the redundancy penalty reads pairs)."""
        return self.redundancy > 0

    def check_scores(self, scores: np.ndarray, given: str) -> None:
        """Reject scores the objective is undefined for (negative r with focus > 0)."""
        if self.focus > 0 and (scores < 0).any():
            raise InvalidInputError(
                f"scores must be non-negative when focus > 0 (they weight coverage rows); "
                f"got {given} with negative entries (focus = {self.focus}). Shift or rescale "
                "the scores, or use focus=0"
            )

    def row_weights(self, scores: np.ndarray) -> np.ndarray:
        """Coverage row weights ``w_j = (1 - beta) + beta * r_j / mean(r)``, float64."""
        r = np.asarray(scores, dtype=np.float64)
        if self.focus == 0 or not r.size:
            return np.ones_like(r)
        # Scaled by a power of two first: the mean of scores near 1e308 cannot
        # overflow, nor subnormal ones lose their digits; the ratios keep their bits.
        r = pow2_scale(r)
        mean = r.mean()
        if mean == 0:
            return np.ones_like(r)
        return (1.0 - self.focus) + self.focus * (r / mean)

    # ------------------------------------------------------------ definition
    def value(self, scores, sim, indices) -> float:
        """Evaluate ``f(S)`` by its definition (the test oracle), in float64.

        Parameters
        ----------
        scores : array_like, shape (N,)
            Relevance ``r``.
        sim : array_like, shape (N, N)
            Non-negative similarity ``s``.
        indices : array_like of int
            The set ``S`` (distinct token indices, any order).

        Returns
        -------
        float
            ``f(S)``; ``0.0`` for the empty set.
        """
        r, s = self._inputs(scores, sim, "value")
        return self.value_of(r, s, _check_indices(to_numpy(indices), r.shape[0]))

    def _inputs(self, scores, sim, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Validated NumPy ``(r, s)`` of one problem for :meth:`value` and :meth:`gains`."""
        check_array_kind("scores", scores)
        check_array_kind("sim", sim)
        r, s, _, r_abs, s_max = check_problem_extremes(
            to_numpy(scores),
            to_numpy(sim),
            0,
            need_symmetric=self.needs_symmetric,
            why_symmetric="the redundancy penalty (redundancy > 0)",
        )
        if r.ndim != 1:
            raise InvalidInputError(f"scores must have shape (N,) for {what}(); got shape {r.shape}")
        self.check_scores(r, f"shape {r.shape}, dtype {r.dtype}")
        n = r.shape[0]
        check_magnitudes([self], None, r_abs, s_max, n, n)
        check_memory(f"sim of N = {n} tokens", 1.0 * s.nbytes)  # the transposed copy
        return r, s

    def value_of(
        self, scores: np.ndarray, sim: np.ndarray, indices: np.ndarray, best: np.ndarray | None = None
    ) -> float:
        """``f(S)`` on already validated NumPy inputs (no checks): see :meth:`value`.

        ``best``, if given, is ``max_{i in S} sim[j, i]`` for every row ``j``
        (as a solver tracked it), saving one gather over ``sim``.
        """
        if indices.size == 0:
            return 0.0
        r64 = scores.astype(np.float64)
        if self.coverage and best is None:
            best = _max_over_columns(sim, indices)
        return self.value_from(
            r64, self.row_weights(r64), best, indices, lambda: sim[np.ix_(indices, indices)]
        )

    def value_from(
        self,
        r: np.ndarray,
        w: np.ndarray,
        best: np.ndarray | None,
        indices: np.ndarray,
        pairs: Callable[[], np.ndarray],
    ) -> float:
        """``f(S)`` from its parts, summed exactly (``math.fsum``): the one place it is written.

        Parameters
        ----------
        r : numpy.ndarray, shape (N,), float64
            Relevance.
        w : numpy.ndarray, shape (N,), float64
            Coverage row weights (:meth:`row_weights`).
        best : numpy.ndarray, shape (N,), or None
            ``max_{i in S} s[j, i]`` for every row ``j``; unused (may be
            ``None``) without coverage.
        indices : numpy.ndarray of int
            The set ``S``, non-empty.
        pairs : callable
            Returns ``s[S][:, S]``, the ``(|S|, |S|)`` block the penalty sums;
            called only when ``redundancy > 0``.

        Returns
        -------
        float
        """
        terms = []
        if self.relevance:
            terms.append(self.relevance * math.fsum(r[indices]))
        if self.coverage:
            assert best is not None  # the callers computed it whenever coverage is weighted
            terms.append(self.coverage * math.fsum(w * best))
        if self.redundancy and indices.size > 1:
            block = pairs().astype(np.float64)
            terms.append(-self.redundancy * math.fsum(block[np.triu_indices(indices.size, 1)]))
        return float(math.fsum(terms))

    def step_gains(self, r, cov, penalty) -> tuple:
        """Gains of ``f`` and of its monotone part ``g`` from a candidate's terms: the one formula.

        ``f_gain = a r + b cov - c p`` and ``g_gain = a max(r, 0) + b cov``,
        for scalars or arrays alike (the compiled kernels' ``step_gain`` is the
        same expression).

        Parameters
        ----------
        r : float or numpy.ndarray
            The candidates' relevance.
        cov : float or numpy.ndarray
            Their coverage gains (``sum_j w_j max(s[j, i] - m_j, 0)``).
        penalty : float or numpy.ndarray
            Their penalty sums ``p_i = sum_{j in S} s[j, i]`` (read only when
            ``redundancy > 0``).

        Returns
        -------
        f_gain, g_gain
        """
        f_gain = self.relevance * r + self.coverage * cov
        g_gain = self.relevance * np.maximum(r, 0.0) + self.coverage * cov
        if self.redundancy:
            f_gain = f_gain - self.redundancy * penalty
        return f_gain, g_gain

    def gains(self, scores, sim, indices=()) -> np.ndarray:
        """Marginal gains ``f(S + {i}) - f(S)`` of every token given the set ``S``.

        Parameters
        ----------
        scores : array_like, shape (N,)
        sim : array_like, shape (N, N)
        indices : array_like of int, optional
            The set ``S``; empty by default.

        Returns
        -------
        numpy.ndarray, shape (N,), float64
            Gains; members of ``S`` get ``0``'s coverage gain and their own terms
            as if re-added, so only non-members are meaningful.
        """
        r, s = self._inputs(scores, sim, "gains")
        state = self.start(r, s)
        for i in _check_indices(to_numpy(indices), r.shape[0]):
            state.add(int(i))
        return state.gains(np.arange(r.shape[0]))[0]

    def start(self, scores: np.ndarray, sim: np.ndarray) -> ObjectiveState:
        """Return the incremental state for ``S = {}`` on validated NumPy inputs."""
        return ObjectiveState(self, scores, sim)


def _max_over_columns(sim: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``max_{i in idx} sim[j, i]`` for every row ``j``, float64 (a max is exact either way)."""
    if fast_for(sim) and sim.flags.c_contiguous:
        return matrix_kernels().max_over_columns(sim, np.ascontiguousarray(idx, dtype=np.int64))
    return sim[:, idx].max(axis=1).astype(np.float64)


def _check_indices(idx: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise InvalidInputError(
            f"indices must be a 1-D array of integers; got shape {idx.shape}, dtype {idx.dtype}"
        )
    idx = idx.astype(np.int64)
    if idx.min() < 0 or idx.max() >= n:
        raise InvalidInputError(f"indices must lie in [0, N) with N = {n}; got values outside it")
    if np.unique(idx).size != idx.size:
        raise InvalidInputError("indices must be distinct; got repeated indices")
    return idx


class ObjectiveState:
    """Incremental state of ``f`` while a set grows: the paper's running max ``m``.

    Tracks ``m_j = max_{i in S} s[j, i]``, the penalty column sums
    ``p_i = sum_{j in S} s[j, i]``, ``f(S)`` and ``g(S)``, where ``g`` is the
    monotone submodular part (coverage plus the non-negative part of the
    relevance bonus) that upper-bounds ``f`` and yields the certificate.

    Gains of a block of candidates are computed row by row with the same
    reduction whatever the block size, so every solver sees bit-identical gains.
    """

    def __init__(self, objective: Objective, scores: np.ndarray, sim: np.ndarray) -> None:
        self.objective = objective
        self.n = scores.shape[0]
        self.r = scores.astype(np.float64)
        self.w = objective.row_weights(self.r)
        # Row i of `columns` is column i of sim: the coverage token i gives every j.
        # A C-contiguous copy keeps each row's reduction identical for any block size.
        self.columns = np.ascontiguousarray(sim.T) if objective.coverage else None
        self.sim = sim
        self.m = np.zeros(self.n, dtype=np.float64)
        self.penalty = np.zeros(self.n, dtype=np.float64)
        self.value = 0.0
        self.upper_value = 0.0

    def gains(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gains of ``f`` and of its monotone part ``g`` for ``candidates``.

        Parameters
        ----------
        candidates : numpy.ndarray of int
            Token indices.

        Returns
        -------
        f_gain, g_gain : numpy.ndarray, float64
            ``f(S + {i}) - f(S)`` and ``g(S + {i}) - g(S)``.
        """
        cov = np.zeros(candidates.shape[0], dtype=np.float64)
        # `columns` exists exactly when coverage is weighted; testing it narrows the type.
        if self.columns is not None:
            for start in range(0, candidates.shape[0], _BLOCK):
                block = candidates[start : start + _BLOCK]
                excess = np.maximum(self.columns[block] - self.m, 0.0)
                cov[start : start + _BLOCK] = lane_sum(excess * self.w)
        return self.objective.step_gains(self.r[candidates], cov, self.penalty[candidates])

    def add(self, i: int, f_gain: float | None = None, g_gain: float | None = None) -> None:
        """Add token ``i`` to ``S`` (gains are recomputed when not given)."""
        if f_gain is None or g_gain is None:
            f, g = self.gains(np.array([i]))
            f_gain, g_gain = float(f[0]), float(g[0])
        self.value += f_gain
        self.upper_value += g_gain
        if self.columns is not None:
            np.maximum(self.m, self.columns[i], out=self.m)
        if self.objective.redundancy:
            self.penalty += self.sim[i]
