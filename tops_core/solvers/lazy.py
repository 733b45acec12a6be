"""Minoux's lazy greedy: same answer as greedy, far fewer gain evaluations."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from tops_core.objective import Objective
from tops_core.solvers._result import SolverResult, top_sum

__all__ = ["Lazy"]


@dataclass(frozen=True)
class Lazy:
    """Lazy greedy (Minoux 1978) with bit-identical order and gains to :class:`Greedy`.

    Stale gains are upper bounds of current gains (submodularity), so a token
    whose gain was refreshed this step and still tops the heap is the greedy
    pick. The heap key ``(-gain, index)`` reproduces greedy's lowest-index tie
    rule, and gains come from the same kernel as greedy's. The certificate uses
    the stale bounds, which are valid upper bounds of the gains.
    """

    name = "lazy"

    def run(self, objective: Objective, scores: np.ndarray, sim: np.ndarray, k: int) -> SolverResult:
        """Select ``k`` tokens; see :class:`SolverResult`."""
        n = scores.shape[0]
        state = objective.start(scores, sim)
        f_bound, g_bound = state.gains(np.arange(n))
        fresh_at = np.zeros(n, dtype=np.int64)
        heap = [(-float(f_bound[i]), i) for i in range(n)]
        heapq.heapify(heap)
        bound = state.upper_value + top_sum(g_bound, k)
        order, gains = [], []
        for step in range(k):
            while True:
                _, i = heapq.heappop(heap)
                if fresh_at[i] == step:
                    break
                f_gain, g_gain = state.gains(np.array([i]))
                f_bound[i], g_bound[i] = f_gain[0], g_gain[0]
                fresh_at[i] = step
                heapq.heappush(heap, (-float(f_bound[i]), i))
            order.append(i)
            gains.append(f_bound[i])
            state.add(i, float(f_bound[i]), float(g_bound[i]))
            g_bound[i] = -np.inf
            bound = min(bound, state.upper_value + top_sum(g_bound, k))
        return SolverResult(np.array(order, dtype=np.int64), np.array(gains, dtype=np.float64), bound)
