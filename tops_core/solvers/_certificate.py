"""Certify a set that was not built by greedy on the objective (rules, exact)."""

from __future__ import annotations

import numpy as np

from tops_core._numba import columns_of, coverage_all, fast_for, greedy_kernels
from tops_core.objective import Objective, ObjectiveState
from tops_core.solvers._result import top_sum

__all__ = ["gains_along", "online_bound", "CoverageState"]


class CoverageState:
    """Final state of a set for the certificate: the part of ``ObjectiveState``'s interface it needs.

    Gains are the canonical ones, computed by one row-major pass (Numba).
    """

    def __init__(self, objective, r, rows, w, m, penalty, upper_value):
        self.objective, self.r, self.rows, self.w = objective, r, rows, w
        self.m, self.penalty, self.upper_value = m, penalty, upper_value

    def gains(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(f_gain, g_gain)`` of ``candidates`` at this state (see ``ObjectiveState.gains``)."""
        obj = self.objective
        cov = coverage_all(self.rows, self.w, self.m)[candidates] if obj.coverage else 0.0
        return obj.step_gains(self.r[candidates], cov, self.penalty[candidates])


def _fast_gains_along(objective, scores, sim, order) -> tuple[np.ndarray, CoverageState]:
    r = scores.astype(np.float64)
    w = objective.row_weights(r)
    rows = np.ascontiguousarray(sim)
    cols = columns_of(rows) if objective.coverage else rows
    f, g, m, penalty = greedy_kernels().gains_along(
        rows,
        cols,
        r,
        np.maximum(r, 0.0),
        w,
        objective.relevance,
        objective.coverage,
        objective.redundancy,
        np.ascontiguousarray(order, dtype=np.int64),
    )
    return f, CoverageState(objective, r, rows, w, m, penalty, float(g.sum()))


def gains_along(
    objective: Objective, scores: np.ndarray, sim: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, ObjectiveState | CoverageState]:
    """Gains of ``objective`` along ``order`` and the final incremental state.

    With Numba, one compiled pass gives the same gains bit for bit.
    """
    if fast_for(sim):
        return _fast_gains_along(objective, scores, sim, order)
    state = objective.start(scores, sim)
    gains = np.empty(order.shape[0], dtype=np.float64)
    for t, i in enumerate(order):
        f_gain, g_gain = state.gains(np.array([i]))
        gains[t] = f_gain[0]
        state.add(int(i), float(f_gain[0]), float(g_gain[0]))
    return gains, state


def start_state(objective: Objective, scores: np.ndarray, sim: np.ndarray) -> ObjectiveState | CoverageState:
    """The state at ``S = {}``: canonical gains by one row-major pass with Numba, else NumPy's."""
    if not fast_for(sim):
        return objective.start(scores, sim)
    r = scores.astype(np.float64)
    n = r.shape[0]
    return CoverageState(
        objective, r, np.ascontiguousarray(sim), objective.row_weights(r), np.zeros(n), np.zeros(n), 0.0
    )


def online_bound(
    objective: Objective, scores: np.ndarray, sim: np.ndarray, order: np.ndarray, k: int, final_state=None
) -> float:
    """Upper bound on ``max_{|T|=k} f(T)`` from the empty set and from ``order``'s set.

    Uses ``g(S) + sum of the k largest gains of g at S`` (``g`` the monotone
    part of ``f``) at ``S = {}`` and at ``S = set(order)``, two passes over
    ``sim``.
    """
    n = scores.shape[0]
    _, g0 = start_state(objective, scores, sim).gains(np.arange(n))
    bound = top_sum(g0, k)
    if final_state is not None and order.size:
        rest = np.setdiff1d(np.arange(n), order)
        _, g1 = final_state.gains(rest)
        bound = min(bound, final_state.upper_value + top_sum(g1, k))
    return bound
