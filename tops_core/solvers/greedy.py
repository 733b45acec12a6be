"""Plain greedy: every candidate's gain every step (Nemhauser-Wolsey-Fisher)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tops_core.objective import Objective
from tops_core.solvers._result import SolverResult, top_sum

__all__ = ["Greedy"]


@dataclass(frozen=True)
class Greedy:
    """Greedy maximisation: add the token of largest marginal gain, ``k`` times.

    Within ``1 - 1/e`` of the optimum for monotone objectives
    (``redundancy = 0``). Cost ``O(k N^2)``; ties go to the lowest index. The
    certificate uses every step's exact gains.
    """

    name = "greedy"

    def run(self, objective: Objective, scores: np.ndarray, sim: np.ndarray, k: int) -> SolverResult:
        """Select ``k`` tokens; see :class:`SolverResult`."""
        n = scores.shape[0]
        state = objective.start(scores, sim)
        candidates = np.arange(n)
        order, gains = [], []
        bound = np.inf
        for _ in range(k):
            f_gain, g_gain = state.gains(candidates)
            bound = min(bound, state.upper_value + top_sum(g_gain, k))
            best = int(np.argmax(f_gain))
            pick = int(candidates[best])
            order.append(pick)
            gains.append(f_gain[best])
            state.add(pick, float(f_gain[best]), float(g_gain[best]))
            candidates = np.delete(candidates, best)
        _, g_gain = state.gains(candidates)
        bound = min(bound, state.upper_value + top_sum(g_gain, k))
        return SolverResult(np.array(order, dtype=np.int64), np.array(gains, dtype=np.float64), bound)
