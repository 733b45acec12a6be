"""Exact solution as a mixed-integer linear program (scipy's HiGHS)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tops_core._validate import InvalidInputError, check_memory, check_weight, short
from tops_core.objective import Objective
from tops_core.solvers._result import SolverResult
from tops_core.solvers.lazy import Lazy

__all__ = ["Exact", "MAX_EXACT_N"]

#: Largest N that ``exact`` accepts by default (see the solver page for timings).
MAX_EXACT_N = 64


@dataclass(frozen=True)
class Exact:
    """Exact maximisation of the objective by MILP (``scipy.optimize.milp``, HiGHS).

    Variables: ``y_i`` (token kept), ``x_ji`` (token ``j`` represented by kept
    ``i``; only where ``w_j s[j, i] > 0``), ``z_ij`` (both kept; only for the
    penalty). Constraints ``sum y = k``, ``sum_i x_ji <= 1``, ``x_ji <= y_i``,
    ``z_ij >= y_i + y_j - 1``. When the time limit stops HiGHS before it proves
    optimality, the best set found is returned with HiGHS's dual bound as the
    certificate and ``optimal=False``.

    Parameters
    ----------
    time_limit : float, default 10.0
        Seconds given to HiGHS, ``> 0``. If HiGHS stops before it finds a
        set, the greedy set is returned with the better of the two bounds.
    max_n : int, default MAX_EXACT_N
        Size guard: larger problems are refused (the MILP has ``O(N^2)``
        variables).
    """

    time_limit: float = 10.0
    max_n: int = MAX_EXACT_N
    name = "exact"

    def __post_init__(self) -> None:
        if check_weight("time_limit", self.time_limit) == 0:
            raise InvalidInputError("time_limit must be positive (seconds given to HiGHS); got 0.0")
        if isinstance(self.max_n, bool) or not isinstance(self.max_n, (int, np.integer)) or self.max_n < 1:
            raise InvalidInputError(f"max_n must be a positive integer; got {short(self.max_n)}")

    def run(self, objective: Objective, scores: np.ndarray, sim: np.ndarray, k: int) -> SolverResult:
        """Solve to optimality (or the time limit); see :class:`SolverResult`."""
        n = scores.shape[0]
        if n > self.max_n:
            raise InvalidInputError(
                f"method='exact' solves a MILP with O(N^2) variables and accepts N <= max_n = "
                f"{self.max_n}; got N = {n}. Use 'lazy' (certified by its upper bound) or raise "
                "max_n with tops_core.Exact(max_n=...)"
            )
        if k == 0:
            return SolverResult(np.zeros(0, np.int64), np.zeros(0), 0.0, True)
        scipy_optimize, scipy_sparse = _scipy()
        # The MILP: a float64 copy of sim, and up to N^2 assignment and N^2 / 2 pair
        # variables with their constraint rows (about 100 bytes each, measured roughly).
        check_memory(f"method='exact' on N = {n} tokens", 8.0 * n * n + 150.0 * n * n)
        rows, cost = _formulation(objective, scores.astype(np.float64), sim.astype(np.float64), k)
        # HiGHS works to absolute tolerances: costs scaled by a power of two to at
        # most 1 in magnitude (exact), the value and bound scaled back.
        scale = float(np.ldexp(1.0, int(np.frexp(np.abs(cost).max(initial=0.0))[1])))
        scale = scale if scale > 0 else 1.0
        integrality = np.zeros(cost.size)
        integrality[:n] = 1
        constraints = scipy_optimize.LinearConstraint(rows.matrix(scipy_sparse, cost.size), rows.lo, rows.hi)
        res = scipy_optimize.milp(
            cost / scale,
            constraints=constraints,
            integrality=integrality,
            bounds=scipy_optimize.Bounds(0.0, 1.0),
            options={"time_limit": float(self.time_limit), "disp": False, "mip_rel_gap": 0.0},
        )
        return _result(res, scale, objective, scores, sim, k)


def _scipy():
    """SciPy's ``optimize`` and ``sparse`` (the ``[exact]`` extra)."""
    try:
        import scipy.optimize
        import scipy.sparse
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("method='exact' needs SciPy: pip install 'tops-prune[exact]'") from exc
    return scipy.optimize, scipy.sparse


class _Rows:
    """The constraint rows of the MILP, gathered as sparse triplets with their bounds."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, var_idx: list[int], coef: list[float], lower: float, upper: float) -> None:
        """Append the row ``lower <= sum coef * x[var_idx] <= upper``."""
        self.rows.extend([len(self.lo)] * len(var_idx))
        self.cols.extend(var_idx)
        self.vals.extend(coef)
        self.lo.append(lower)
        self.hi.append(upper)

    def matrix(self, scipy_sparse, n_vars: int):
        """The rows as a CSR matrix over ``n_vars`` variables."""
        shape = (len(self.lo), n_vars)
        return scipy_sparse.coo_array((self.vals, (self.rows, self.cols)), shape=shape).tocsr()


def _formulation(objective: Objective, r: np.ndarray, s: np.ndarray, k: int) -> tuple[_Rows, np.ndarray]:
    """The MILP's constraint rows and cost (``-f`` in the order ``y, x, z``); see :class:`Exact`."""
    n = r.shape[0]
    w = objective.row_weights(r)
    a, b, c = objective.relevance, objective.coverage, objective.redundancy
    cost_terms = [-a * r]
    rows = _Rows()
    rows.add(list(range(n)), [1.0] * n, k, k)
    n_vars = n
    if b > 0:
        jj, ii = np.nonzero((w[:, None] * s) > 0)
        x_var = n_vars + np.arange(jj.size)
        n_vars += jj.size
        cost_terms.append(-b * w[jj] * s[jj, ii])
        for j in range(n):
            sel = np.flatnonzero(jj == j)
            if sel.size:
                rows.add(x_var[sel].tolist(), [1.0] * sel.size, -np.inf, 1.0)
        for t in range(jj.size):
            rows.add([int(x_var[t]), int(ii[t])], [1.0, -1.0], -np.inf, 0.0)
    if c > 0:
        pi, pj = np.triu_indices(n, 1)
        keep = s[pi, pj] > 0
        pi, pj = pi[keep], pj[keep]
        z_var = n_vars + np.arange(pi.size)
        cost_terms.append(c * s[pi, pj])
        for t in range(pi.size):
            rows.add([int(z_var[t]), int(pi[t]), int(pj[t])], [1.0, -1.0, -1.0], -1.0, np.inf)
    return rows, np.concatenate(cost_terms)


def _result(
    res, scale: float, objective: Objective, scores: np.ndarray, sim: np.ndarray, k: int
) -> SolverResult:
    """The set HiGHS found and its certificate: the optimum, or HiGHS's dual bound at the time limit."""
    n = scores.shape[0]
    dual = getattr(res, "mip_dual_bound", None)
    dual = None if dual is None else float(dual) * scale
    chosen = None if res.x is None else np.flatnonzero(res.x[:n] > 0.5).astype(np.int64)
    if chosen is None or chosen.size != k or not np.isfinite(res.fun):
        # Stopped before a feasible set (a very short time limit): the greedy
        # set, certified by the better of its own bound and HiGHS's.
        greedy = Lazy().run(objective, scores, sim, k)
        bound = greedy.upper_bound
        if dual is not None and np.isfinite(dual):
            bound = min(bound, float(-dual))
        return SolverResult(np.sort(greedy.order), np.zeros(0), bound, False)
    optimal = res.status == 0
    bound = float(-res.fun * scale) if optimal or dual is None or not np.isfinite(dual) else -dual
    return SolverResult(chosen, np.zeros(0), bound, bool(optimal))
