"""Solvers of the preservation-set objective, one file each (listed in :mod:`tops_core.registry`)."""

from __future__ import annotations

from tops_core.solvers._result import SolverResult
from tops_core.solvers.exact import MAX_EXACT_N, Exact
from tops_core.solvers.greedy import Greedy
from tops_core.solvers.incremental import Incremental
from tops_core.solvers.lazy import Lazy
from tops_core.solvers.stochastic import Stochastic

__all__ = [
    "Exact",
    "Greedy",
    "Incremental",
    "Lazy",
    "Stochastic",
    "SolverResult",
    "MAX_EXACT_N",
]
