"""``select``: the one entry point, for NumPy, PyTorch and MLX inputs."""

from __future__ import annotations

import numpy as np

from tops_core._dispatch import adapter_for, framework_of
from tops_core._validate import InvalidInputError, check_choice, check_problem, describe, symmetry_memo
from tops_core.features import Features, select_features
from tops_core.objective import Objective
from tops_core.rules import DPP, SCOPE, DivPrune, TopK, TOPSRule
from tops_core.selection import Selection
from tops_core.solvers import SOLVERS, Exact, Greedy, Incremental, Lazy, Stochastic
from tops_core.solvers._certificate import gains_along, online_bound
from tops_core.solvers._result import SolverResult

__all__ = ["select", "resolve"]

_RULES = (TOPSRule, TopK, DivPrune, SCOPE, DPP)
_METHODS = ("auto", *SOLVERS)


def resolve(objective=None, method="auto"):
    """Resolve ``objective`` and ``method`` to an objective or rule and a solver.

    Parameters
    ----------
    objective : Objective, rule or None
        ``None`` means ``Objective()``.
    method : str or solver instance
        ``"auto"``, ``"greedy"``, ``"lazy"``, ``"stochastic"``, ``"exact"``, or a
        configured solver such as ``Stochastic(seed=1)``.

    Returns
    -------
    objective, solver
        ``solver`` is ``None`` for rules (they run their own construction).
    """
    objective = Objective() if objective is None else objective
    if not isinstance(objective, (Objective, *_RULES)):
        raise InvalidInputError(
            "objective must be a tops_core.Objective or a rule (TOPSRule, TopK, DivPrune, "
            f"SCOPE, DPP); got {type(objective).__name__}"
        )
    if isinstance(method, str):
        check_choice("method", method, _METHODS)
    elif not isinstance(method, (Greedy, Lazy, Stochastic, Exact, Incremental)):
        raise InvalidInputError(
            "method must be a name (" + ", ".join(repr(m) for m in _METHODS)
            + f") or a solver instance; got {type(method).__name__}"
        )
    if isinstance(objective, _RULES):
        name = method if isinstance(method, str) else method.name
        if name not in ("auto", "greedy"):
            why = (
                "re-normalises its scores over the candidates at every step, so it is not the "
                "greedy of any fixed set function"
                if isinstance(objective, TOPSRule)
                else "is a step rule, not a set function that a solver could maximise"
            )
            raise InvalidInputError(
                f"{type(objective).__name__} {why}: only method='greedy' (or 'auto') applies; "
                f"got method={name!r}. To certify a set, use objective=tops_core.Objective(...)"
            )
        return objective, None
    if isinstance(method, str):
        method = Incremental() if method == "auto" else SOLVERS[method]()
    return objective, method


def select(scores, sim, k, /, *, objective=None, method="auto", reference=None) -> Selection:
    """Select the ``k`` visual tokens that best preserve the image for the task.

    Parameters
    ----------
    scores : array, shape (N,) or (B, N)
        Relevance ``r`` of each token (e.g. CLS or text-to-visual attention).
        NumPy array (or array-like), ``torch.Tensor`` or ``mlx.core.array``.
    sim : array, shape (N, N) or (B, N, N), or Features
        Non-negative similarity (e.g. ``(1 + cosine) / 2``), same framework and
        device as ``scores``; or :class:`Features` (unbatched) to build
        similarity rows on demand from token features, never the full matrix.
    k : int
        Tokens to keep, ``0 <= k <= N``.
    objective : Objective or rule, optional
        What to maximise: an :class:`Objective` (default ``Objective()``:
        relevance-weighted coverage, certified) or a rule
        (:class:`TOPSRule`, :class:`TopK`, :class:`DivPrune`, :class:`SCOPE`,
        :class:`DPP`).
    method : str or solver, default "auto"
        ``"greedy"``, ``"lazy"``, ``"stochastic"``, ``"exact"`` or ``"auto"``
        (the fastest available way to the greedy answer: it may change speed,
        never answers). Rules accept only ``"greedy"``/``"auto"``.
    reference : Objective, optional
        Objective that evaluates and certifies a rule's answer (default
        ``Objective()``). Ignored for objectives.

    Returns
    -------
    Selection
        Indices (ascending) and pick order in the caller's framework and on
        its device, gains, value, upper bound, method, optimality flag. Batched
        input gives ``(B, k)`` arrays and ``(B,)`` values.

    Raises
    ------
    InvalidInputError
        On bad input (a subclass of ``ValueError`` and ``TypeError``); the
        message names the argument, the requirement and what was given.

    Examples
    --------
    >>> import numpy as np, tops_core
    >>> feats = np.eye(4)[[0, 0, 1, 2, 3, 3]] + 0.01
    >>> sim = tops_core.cosine(feats)
    >>> sel = tops_core.select(np.ones(6), sim, 4)
    >>> sel.indices.tolist()
    [0, 2, 3, 4]
    >>> bool(sel.value <= sel.upper_bound)
    True
    """
    objective, solver = resolve(objective, method)
    if isinstance(sim, Features):
        if not isinstance(objective, Objective) or not isinstance(solver, (Incremental, Greedy, Lazy)):
            raise InvalidInputError(
                "sim given as tops_core.Features runs the greedy of an Objective (method 'auto', "
                f"'greedy' or 'lazy'); got objective={type(objective).__name__}, method="
                f"{getattr(solver, 'name', method)!r}. Pass a dense sim (e.g. "
                "tops_core.cosine(features)) for rules and other solvers"
            )
        return select_features(scores, sim, k, objective)
    if framework_of(scores) != framework_of(sim):
        raise InvalidInputError(
            f"scores and sim must come from the same framework; got scores as "
            f"{framework_of(scores)} ({describe(scores)}) and sim as {framework_of(sim)} "
            f"({describe(sim)})"
        )
    adapter = adapter_for(scores)
    if adapter is None:
        return _select_numpy(scores, sim, k, objective, solver, reference)
    adapter.check_pair(scores, sim)
    native = adapter.select_native(scores, sim, k, objective, solver, reference)
    if native is not None:
        return native
    host = _select_numpy(
        adapter.to_numpy(scores), adapter.to_numpy(sim), k, objective, solver, reference,
        scores_given=adapter.describe(scores), sim_given=adapter.describe(sim),
    )
    return Selection(
        indices=adapter.from_numpy(host.indices, scores),
        order=adapter.from_numpy(host.order, scores),
        gains=adapter.from_numpy(host.gains, scores),
        value=host.value,
        upper_bound=host.upper_bound,
        method=host.method + "+host",
        optimal=host.optimal,
    )


def _select_numpy(scores, sim, k, objective, solver, reference, scores_given=None, sim_given=None):
    """Validate and solve on NumPy inputs, row by row when batched."""
    with symmetry_memo():
        return _validate_and_solve(scores, sim, k, objective, solver, reference, scores_given, sim_given)


def _validate_and_solve(scores, sim, k, objective, solver, reference, scores_given, sim_given):
    if isinstance(objective, Objective):
        need_sym, why = objective.needs_symmetric, "the redundancy penalty (redundancy > 0)"
        evaluator = objective
    else:
        need_sym, why = objective.needs_symmetric, type(objective).__name__
        evaluator = Objective() if reference is None else reference
        if not isinstance(evaluator, Objective):
            raise InvalidInputError(
                f"reference must be a tops_core.Objective; got {type(evaluator).__name__}"
            )
    r, s, k = check_problem(scores, sim, k, need_symmetric=need_sym, why_symmetric=why,
                            scores_given=scores_given, sim_given=sim_given)
    evaluator.check_scores(r, scores_given or describe(scores))
    if r.ndim == 1:
        return _solve_one(r, s, k, objective, solver, evaluator)
    rows = [_solve_one(r[b], s[b], k, objective, solver, evaluator) for b in range(r.shape[0])]
    return Selection(
        indices=np.stack([x.indices for x in rows]),
        order=np.stack([x.order for x in rows]),
        gains=np.stack([x.gains for x in rows]),
        value=np.array([x.value for x in rows], dtype=np.float64),
        upper_bound=np.array([x.upper_bound for x in rows], dtype=np.float64),
        method=rows[0].method,
        optimal=np.array([x.optimal for x in rows], dtype=bool),
    )


def _solve_one(r, s, k, objective, solver, evaluator) -> Selection:
    if solver is None:
        order = objective.order(r, s, k)
        gains, state = gains_along(evaluator, r, s, order)
        result = SolverResult(order, gains, online_bound(evaluator, r, s, order, k, state), best=state.m)
        name = objective.name
    else:
        result = solver.run(objective, r, s, k)
        name = solver.name
        if result.gains.shape[0] != k:  # exact: gains along its (ascending) set
            gains, _ = gains_along(objective, r, s, result.order)
            result = SolverResult(result.order, gains, result.upper_bound, result.optimal)
    order = result.order.astype(np.int64)
    best = result.best  # max over S of each row: the same whatever weighs it
    value = evaluator.value_of(r, s, order, best)
    bound = max(float(result.upper_bound), value)
    closes = bound - value <= 1e-12 * max(1.0, abs(bound))
    return Selection(
        indices=np.sort(order),
        order=order,
        gains=result.gains,
        value=value,
        upper_bound=bound,
        method=name,
        optimal=bool(result.optimal or closes or k == r.shape[0]),
    )
