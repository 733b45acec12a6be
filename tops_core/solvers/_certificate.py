"""Certify a set that was not built by greedy on the objective (rules, exact)."""

from __future__ import annotations

import numpy as np

from tops_core.objective import Objective
from tops_core.solvers._result import top_sum

__all__ = ["gains_along", "online_bound"]


def gains_along(objective: Objective, scores: np.ndarray, sim: np.ndarray, order: np.ndarray):
    """Gains of ``objective`` along ``order`` and the final incremental state.

    With Numba, one compiled pass gives the same gains bit for bit.
    """
    from tops_core.solvers.incremental import fast_for, fast_gains_along

    if fast_for(sim):
        return fast_gains_along(objective, scores, sim, order)
    state = objective.start(scores, sim)
    gains = np.empty(order.shape[0], dtype=np.float64)
    for t, i in enumerate(order):
        f_gain, g_gain = state.gains(np.array([i]))
        gains[t] = f_gain[0]
        state.add(int(i), float(f_gain[0]), float(g_gain[0]))
    return gains, state


def online_bound(objective: Objective, scores: np.ndarray, sim: np.ndarray,
                 order: np.ndarray, k: int, final_state=None) -> float:
    """Upper bound on ``max_{|T|=k} f(T)`` from the empty set and from ``order``'s set.

    Uses ``g(S) + sum of the k largest gains of g at S`` (``g`` the monotone
    part of ``f``) at ``S = {}`` and at ``S = set(order)``, two passes over
    ``sim``.
    """
    from tops_core.solvers.incremental import fast_for, fast_start

    n = scores.shape[0]
    start = fast_start(objective, scores, sim) if fast_for(sim) else objective.start(scores, sim)
    _, g0 = start.gains(np.arange(n))
    bound = top_sum(g0, k)
    if final_state is not None and order.size:
        rest = np.setdiff1d(np.arange(n), order)
        _, g1 = final_state.gains(rest)
        bound = min(bound, final_state.upper_value + top_sum(g1, k))
    return bound
