"""Stochastic greedy (Mirzasoleiman et al., AAAI 2015)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tops_core._validate import InvalidInputError, check_weight, short
from tops_core.objective import Objective
from tops_core.solvers._result import SolverResult, top_sum

__all__ = ["Stochastic"]


@dataclass(frozen=True)
class Stochastic:
    """Stochastic greedy: each step, the best of a random sample of candidates.

    The sample has ``ceil(N / k * ln(1 / epsilon))`` candidates, which gives
    ``1 - 1/e - epsilon`` in expectation for monotone objectives at
    ``O(N ln(1/epsilon))`` gain evaluations in all. Reproducible for a fixed
    ``seed``.

    Parameters
    ----------
    epsilon : float, default 0.01
        Accuracy parameter, ``0 < epsilon < 1``.
    seed : int, default 0
        Seed of :func:`numpy.random.default_rng`, ``>= 0``.
    """

    epsilon: float = 0.01
    seed: int = 0
    name = "stochastic"

    def __post_init__(self) -> None:
        eps = check_weight("epsilon", self.epsilon)
        if not 0 < eps < 1:
            raise InvalidInputError(f"epsilon must satisfy 0 < epsilon < 1; got {eps!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InvalidInputError(f"seed must be an integer; got {type(self.seed).__name__}")
        if self.seed < 0:  # numpy.random.default_rng refuses them, later and unnamed
            raise InvalidInputError(f"seed must be a non-negative integer; got {short(self.seed)}")

    def run(self, objective: Objective, scores: np.ndarray, sim: np.ndarray, k: int) -> SolverResult:
        """Select ``k`` tokens; see :class:`SolverResult`."""
        n = scores.shape[0]
        rng = np.random.default_rng(int(self.seed))
        state = objective.start(scores, sim)
        # Singleton gains bound every later gain: they seed the certificate.
        _, g_bound = state.gains(np.arange(n))
        bound = state.upper_value + top_sum(g_bound, k)
        sample_size = max(1, math.ceil(n / max(k, 1) * math.log(1 / self.epsilon)))
        chosen = np.zeros(n, dtype=bool)
        order, gains = [], []
        for _ in range(k):
            candidates = np.flatnonzero(~chosen)
            if candidates.size > sample_size:
                candidates = np.sort(rng.choice(candidates, sample_size, replace=False))
            f_gain, g_gain = state.gains(candidates)
            g_bound[candidates] = g_gain
            best = int(np.argmax(f_gain))
            pick = int(candidates[best])
            order.append(pick)
            gains.append(f_gain[best])
            state.add(pick, float(f_gain[best]), float(g_gain[best]))
            chosen[pick] = True
            g_bound[pick] = -np.inf
        rest = np.flatnonzero(~chosen)
        _, g_gain = state.gains(rest)
        bound = min(bound, state.upper_value + top_sum(g_gain, k))
        return SolverResult(np.array(order, dtype=np.int64), np.array(gains, dtype=np.float64), bound)
