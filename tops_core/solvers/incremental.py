"""Incremental exact greedy: greedy's answer at close to one pass over ``sim``.

What ``select(method="auto")`` runs for objectives. With Numba installed (the
``[fast]`` extra) the compiled kernels in :mod:`tops_core.solvers._greedy_kernels`
run; without it, :class:`~tops_core.Lazy` (NumPy) gives the same order and
gains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tops_core._numba import coverage_all, fast_for, greedy_kernels, run_on_columns
from tops_core._validate import InvalidInputError, exactly_symmetric
from tops_core.objective import Objective
from tops_core.solvers._result import SolverResult, top_sum
from tops_core.solvers.lazy import Lazy

__all__ = ["Incremental", "run_from_coverage"]


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
        if self.symmetric and not exactly_symmetric(sim):
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

        # Columns must be read contiguously (a strided column costs a cache miss
        # per entry): a symmetric sim is its own transpose; otherwise copy once.
        def from_columns(cols: np.ndarray) -> SolverResult:
            cov0 = np.zeros(n) if objective.coverage == 0 else coverage_all(rows, w)
            return run_from_coverage(objective, r, rows, cols, w, cov0, k)

        return run_on_columns(rows, from_columns)


def run_from_coverage(objective, r, rows, cols, w, cov0, k) -> SolverResult:
    """Run the kernel from canonical initial coverage gains ``cov0`` (shared with features mode)."""
    a, b, c = objective.relevance, objective.coverage, objective.redundancy
    r_pos = np.maximum(r, 0.0)
    g0 = a * r_pos + b * cov0
    bound = top_sum(g0, k)
    cov = cov0.copy()
    order, f_gains, _, upper_value, tol, m, _ = greedy_kernels().greedy_steps(
        rows, cols, r, r_pos, w, a, b, c, k, cov
    )
    if k < r.shape[0]:
        rest = np.ones(r.shape[0], dtype=bool)
        rest[order] = False
        g_final = a * r_pos[rest] + b * cov[rest] + b * tol
        bound = min(bound, upper_value + top_sum(g_final, k))
    else:
        bound = min(bound, upper_value)
    return SolverResult(order, f_gains, bound, best=m if b else None)
