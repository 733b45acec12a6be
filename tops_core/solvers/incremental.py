"""Incremental exact greedy: greedy's answer at close to one pass over ``sim``.

What ``select(method="auto")`` runs for objectives. With Numba installed (the
``[fast]`` extra) the compiled kernels in :mod:`tops_core.solvers._kernels`
run; without it, :class:`~tops_core.Lazy` (NumPy) gives the same order and
gains.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from tops_core._validate import InvalidInputError
from tops_core.objective import Objective
from tops_core.solvers._result import SolverResult, top_sum
from tops_core.solvers.lazy import Lazy

__all__ = ["Incremental", "numba_available", "kernels", "coverage_all", "fast_gains_along", "fast_start",
           "fast_for"]

# Rows of sim streamed per call when the initial gains are summed (bounds nothing
# but the call overhead: the kernel reads the rows in place).
_ROWS = 1024


def numba_available() -> bool:
    """Whether the optional Numba kernels can be used (without importing Numba)."""
    return importlib.util.find_spec("numba") is not None


def fast_for(sim: np.ndarray) -> bool:
    """Whether the compiled kernels apply to ``sim`` (Numba installed, float32 or float64)."""
    return sim.dtype in (np.float32, np.float64) and numba_available()


def kernels():
    """The compiled kernels module (imports Numba on first use)."""
    from tops_core.solvers import _kernels

    return _kernels


def coverage_all(sim_rows: np.ndarray, w: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    """Canonical coverage gains of every token at running max ``m`` (default: ``S = {}``).

    One row-major pass over ``sim``, bit-identical to the column-wise kernel.
    """
    kern = kernels()
    n = w.shape[0]
    m = np.zeros(n) if m is None else m
    lanes = np.zeros((8, sim_rows.shape[1]), dtype=np.float64)
    for start in range(0, n, _ROWS):
        kern.add_lanes(sim_rows[start:start + _ROWS], start, w, m, lanes)
    return kern.combine_lanes(lanes)


def columns_of(rows: np.ndarray) -> np.ndarray:
    """``rows`` itself when exactly symmetric, else its transposed copy (columns contiguous)."""
    return rows if is_symmetric(rows) else kernels().transpose(rows)


class CoverageState:
    """Final state of a set for the certificate: the NumPy ``ObjectiveState`` interface it needs.

    Gains are the canonical ones, computed by one row-major pass.
    """

    def __init__(self, objective, r, rows, w, m, penalty, upper_value):
        self.objective, self.r, self.rows, self.w = objective, r, rows, w
        self.m, self.penalty, self.upper_value = m, penalty, upper_value

    def gains(self, candidates: np.ndarray):
        """``(f_gain, g_gain)`` of ``candidates`` at this state (see ``ObjectiveState.gains``)."""
        obj = self.objective
        cov = coverage_all(self.rows, self.w, self.m)[candidates] if obj.coverage else 0.0
        f_gain = obj.relevance * self.r[candidates] + obj.coverage * cov
        g_gain = obj.relevance * np.maximum(self.r, 0.0)[candidates] + obj.coverage * cov
        if obj.redundancy:
            f_gain = f_gain - obj.redundancy * self.penalty[candidates]
        return f_gain, g_gain


def fast_gains_along(objective, scores, sim, order):
    """Gains along ``order`` (bit-identical to the NumPy ones) and a :class:`CoverageState`."""
    r = scores.astype(np.float64)
    w = objective.row_weights(r)
    rows = np.ascontiguousarray(sim)
    cols = columns_of(rows) if objective.coverage else rows
    f, g, m, penalty = kernels().gains_along(rows, cols, r, np.maximum(r, 0.0), w, objective.relevance,
                                             objective.coverage, objective.redundancy,
                                             np.ascontiguousarray(order, dtype=np.int64))
    return f, CoverageState(objective, r, rows, w, m, penalty, float(g.sum()))


def fast_start(objective, scores, sim):
    """A :class:`CoverageState` at ``S = {}``."""
    r = scores.astype(np.float64)
    n = r.shape[0]
    return CoverageState(objective, r, np.ascontiguousarray(sim), objective.row_weights(r),
                         np.zeros(n), np.zeros(n), 0.0)


def is_symmetric(a: np.ndarray) -> bool:
    """Exact symmetry, tile by tile (stops at the first differing tile)."""
    from tops_core._validate import exactly_symmetric

    return exactly_symmetric(a)


@dataclass(frozen=True)
class Incremental:
    """Exact greedy with incrementally maintained gains (same order and gains as Greedy).

    Initial gains are one pass over ``sim``; each pick then updates every
    candidate's gain only through the rows whose running max ``m_j`` rose,
    ``O(N)`` per such row instead of ``O(N^2)`` per step. Running gains carry
    rounding drift, bounded at every step; picks whose lead is within the
    bound are re-decided on canonically recomputed gains, so the order equals
    :class:`~tops_core.Greedy`'s bit for bit. The certificate is the online
    bound at ``S = {}`` and at the final set (with the drift bound added).

    Parameters
    ----------
    symmetric : bool, default False
        Require ``sim`` to be exactly symmetric (its rows then serve as its
        columns). Checked on every call, block by block, at the cost of one
        read of ``sim``; an asymmetric ``sim`` is refused with
        :class:`~tops_core.InvalidInputError`. The default detects symmetry
        itself, so the flag only turns a silent transposed copy into an error.
    """

    symmetric: bool = False
    name = "incremental"

    def run(self, objective: Objective, scores: np.ndarray, sim: np.ndarray, k: int) -> SolverResult:
        """Select ``k`` tokens; see :class:`SolverResult`."""
        if self.symmetric and not is_symmetric(sim):
            raise InvalidInputError(
                "sim must be exactly symmetric for Incremental(symmetric=True); got shape "
                f"{sim.shape}, dtype {sim.dtype} that is not. Use Incremental() (it detects symmetry itself)"
            )
        if not fast_for(sim):
            return Lazy().run(objective, scores, sim, k)
        n = scores.shape[0]
        r = scores.astype(np.float64)
        w = objective.row_weights(r)
        rows = np.ascontiguousarray(sim)
        if objective.coverage == 0:
            cov0 = np.zeros(n)
        else:
            cov0 = coverage_all(rows, w)
        # Columns must be read contiguously (a strided column costs a cache miss
        # per entry): a symmetric sim is its own transpose; otherwise copy once.
        cols = columns_of(rows)  # the rows themselves when symmetric (memoised check)
        return run_from_coverage(objective, r, rows, cols, w, cov0, k)


def run_from_coverage(objective, r, rows, cols, w, cov0, k) -> SolverResult:
    """Run the kernel from canonical initial coverage gains ``cov0`` (shared with features mode)."""
    kern = kernels()
    a, b, c = objective.relevance, objective.coverage, objective.redundancy
    r_pos = np.maximum(r, 0.0)
    g0 = a * r_pos + b * cov0
    bound = top_sum(g0, k)
    cov = cov0.copy()
    order, f_gains, _, upper_value, tol, m, _ = kern.greedy_steps(rows, cols, r, r_pos, w, a, b, c, k, cov)
    if k < r.shape[0]:
        rest = np.ones(r.shape[0], dtype=bool)
        rest[order] = False
        g_final = a * r_pos[rest] + b * cov[rest] + b * tol
        bound = min(bound, upper_value + top_sum(g_final, k))
    else:
        bound = min(bound, upper_value)
    return SolverResult(order, f_gains, bound, best=m if b else None)
