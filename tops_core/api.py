"""``select``: the one entry point, for NumPy, PyTorch and MLX inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from tops_core._dispatch import adapter_for, framework_of
from tops_core._validate import (
    InvalidInputError,
    check_array_kind,
    check_choice,
    check_magnitudes,
    check_memory,
    check_problem_extremes,
    describe,
    symmetry_memo,
)
from tops_core.features import Features, select_features
from tops_core.objective import Objective
from tops_core.registry import AUTO, RULES, SOLVERS, method_of
from tops_core.rules import Rule, TopK, TOPSRule
from tops_core.selection import ArrayT, Selection
from tops_core.solvers._certificate import gains_along, online_bound
from tops_core.solvers._result import SolverResult, certified_selection

__all__ = ["select", "resolve"]

_RULES = tuple(RULES.values())
_SOLVERS = tuple(SOLVERS.values())
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
            "objective must be a tops_core.Objective or a rule ("
            + ", ".join(cls.__name__ for cls in _RULES)
            + f"); got {type(objective).__name__}"
        )
    if isinstance(method, str):
        check_choice("method", method, _METHODS)
    elif not isinstance(method, _SOLVERS):
        raise InvalidInputError(
            "method must be a name ("
            + ", ".join(repr(m) for m in _METHODS)
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
        method = AUTO() if method == "auto" else SOLVERS[method]()
    return objective, method


@overload
def select(
    scores: np.ndarray | Sequence[Any],
    sim: np.ndarray | Sequence[Any] | Features,
    k: int,
    /,
    *,
    objective: Objective | Rule | None = None,
    method: Any = "auto",
    reference: Objective | None = None,
) -> Selection[np.ndarray]: ...
@overload
def select(
    scores: ArrayT,
    sim: ArrayT | Features,
    k: int,
    /,
    *,
    objective: Objective | Rule | None = None,
    method: Any = "auto",
    reference: Objective | None = None,
) -> Selection[ArrayT]: ...
def select(scores, sim, k, /, *, objective=None, method="auto", reference=None):
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
        check_array_kind("scores", scores)
        entry = method_of(solver)
        if not isinstance(objective, Objective) or entry is None or not entry.greedy_answer:
            raise InvalidInputError(
                "sim given as tops_core.Features runs the greedy of an Objective (method 'auto', "
                f"'greedy' or 'lazy'); got objective={type(objective).__name__}, method="
                f"{getattr(solver, 'name', method)!r}. Pass a dense sim (e.g. "
                "tops_core.cosine(features)) for rules and other solvers"
            )
        return _in_framework_of(scores, select_features(scores, sim, k, objective))
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
    check_array_kind("scores", scores)
    check_array_kind("sim", sim)
    native = adapter.select_native(scores, sim, k, objective, solver, reference)
    if native is not None:
        return native
    check_memory(f"sim of shape {tuple(sim.shape)} (a host copy)", 8.0 * _size_of(sim))
    host = _select_numpy(
        adapter.to_numpy(scores),
        adapter.to_numpy(sim),
        k,
        objective,
        solver,
        reference,
        scores_given=adapter.describe(scores),
        sim_given=adapter.describe(sim),
    )
    return _in_framework_of(scores, host, adapter)


def _size_of(x) -> float:
    return float(np.prod(tuple(x.shape), dtype=np.float64))


#: Largest magnitude the native (float32) paths of the adapters are given: their
#: sums of N terms must not overflow float32.
_NATIVE_LARGEST = float(np.finfo(np.float32).max) / 1024


def native_may_run(scores, sim, objective, reference) -> bool:
    """Whether an adapter's on-device loop or kernel may run; else the host path (float64, every check).

    Adapters call it before a device route (host-memory routes run the core,
    which checks magnitudes itself). The device paths compute in float32 for
    float32 and half inputs: inputs
    whose sums could overflow float32 (one read-back of two maxima), and
    weights outside float32's normal range, go through the core.
    """
    weights = [
        float(getattr(o, f.name))
        for o in (objective, reference)
        if dataclasses.is_dataclass(o)
        for f in dataclasses.fields(o)
        if isinstance(getattr(o, f.name), (int, float))
    ]
    tiny = float(np.finfo(np.float32).tiny)
    if any(w != 0 and not tiny <= w <= _NATIVE_LARGEST for w in weights):
        return False
    n = scores.shape[-1] if len(scores.shape) else 0
    if not n or not _size_of(sim):
        return True  # the native path hands empty input to the core
    try:
        top = (abs(scores).max() * n + abs(sim).max() * n) * max([1.0, *weights])
        return bool(top <= _NATIVE_LARGEST)  # False for NaN: the core names it
    except Exception:  # e.g. no abs for the dtype: the core validates and names it
        return False


def _in_framework_of(like, sel: Selection, adapter=None) -> Selection:
    """A host ``Selection`` with its arrays in ``like``'s framework and on its device."""
    adapter = adapter if adapter is not None else adapter_for(like)
    if adapter is None:
        return sel
    return Selection(
        indices=adapter.from_numpy(sel.indices, like),
        order=adapter.from_numpy(sel.order, like),
        gains=adapter.from_numpy(sel.gains, like),
        value=sel.value,
        upper_bound=sel.upper_bound,
        method=sel.method + "+host",
        optimal=sel.optimal,
    )


def _select_numpy(scores, sim, k, objective, solver, reference, scores_given=None, sim_given=None):
    """Validate and solve on NumPy inputs, row by row when batched."""
    with symmetry_memo():
        return _validate_and_solve(scores, sim, k, objective, solver, reference, scores_given, sim_given)


def _validate_and_solve(scores, sim, k, objective, solver, reference, scores_given, sim_given):
    if isinstance(objective, Objective):
        need_sym, why = objective.needs_symmetric, "the redundancy penalty (redundancy > 0)"
        evaluator, rule = objective, None
    else:
        evaluator, rule = Objective() if reference is None else reference, objective
        if not isinstance(evaluator, Objective):
            raise InvalidInputError(
                f"reference must be a tops_core.Objective; got {type(evaluator).__name__}"
            )
        # The reference's value must not depend on the pick order either.
        need_sym = objective.needs_symmetric or evaluator.needs_symmetric
        why = (
            type(objective).__name__
            if objective.needs_symmetric
            else "the reference's redundancy penalty (redundancy > 0)"
        )
    r, s, k, r_abs, s_max = check_problem_extremes(
        scores,
        sim,
        k,
        need_symmetric=need_sym,
        why_symmetric=why,
        scores_given=scores_given,
        sim_given=sim_given,
    )
    evaluator.check_scores(r, scores_given or describe(scores))
    n = r.shape[-1]
    check_magnitudes([evaluator], rule, r_abs, s_max, n, k)
    check_memory(f"sim of N = {n} tokens", _working_bytes(objective, s))
    if r.ndim == 1:
        return _checked(_solve_one(r, s, k, objective, solver, evaluator), n)
    rows = [_checked(_solve_one(r[b], s[b], k, objective, solver, evaluator), n) for b in range(r.shape[0])]
    empty = np.zeros((0, k))
    return Selection(
        indices=np.stack([x.indices for x in rows]) if rows else empty.astype(np.int64),
        order=np.stack([x.order for x in rows]) if rows else empty.astype(np.int64),
        gains=np.stack([x.gains for x in rows]) if rows else empty,
        value=np.array([x.value for x in rows], dtype=np.float64),
        upper_bound=np.array([x.upper_bound for x in rows], dtype=np.float64),
        method=rows[0].method if rows else (objective.name if solver is None else solver.name),
        optimal=np.array([x.optimal for x in rows], dtype=bool),
    )


def _working_bytes(objective, s: np.ndarray) -> float:
    """Working memory a dense path may allocate for one problem, beyond its inputs.

    Up to two ``N x N`` float64 working copies (a transposed copy for column
    reads, a float64 widening); top-k needs none. ``Exact`` is bounded by its
    own size guard.
    """
    n = s.shape[-1]
    copies = 0 if isinstance(objective, TopK) else 2
    return copies * 8.0 * n * n


def _checked(sel: Selection, n: int) -> Selection:
    """Refuse to return an answer that is not one: the last line of defence.

    ``k`` distinct indices in ``[0, N)`` and a finite value and bound; cheap
    (``O(k log k)``). Overflow is refused up front by :func:`check_magnitudes`;
    a breach here is a bug, reported as such.
    """
    order = sel.order
    valid = (order.size == 0 or (order.min() >= 0 and order.max() < n)) and np.unique(
        order
    ).size == order.size
    if not (valid and np.isfinite(sel.value) and np.isfinite(sel.upper_bound)):
        raise RuntimeError(
            f"tops-prune produced an invalid answer ({sel.method}, N = {n}, k = {order.size}); "
            "please report this input's shapes, dtypes and magnitudes as a bug"
        )
    return sel


def _solve_one(r, s, k, objective, solver, evaluator) -> Selection:
    if k == 0:  # the empty set: f = 0, optimal (also for N = 0, an image cropped to nothing)
        return Selection.empty(objective.name if solver is None else solver.name)
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
    proven = bool(result.optimal) or k == r.shape[0]
    return certified_selection(order, result.gains, value, result.upper_bound, name, proven)
