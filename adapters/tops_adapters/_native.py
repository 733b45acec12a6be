"""The one native adapter: routing and answer assembly shared by PyTorch and MLX.

``tops_core.select`` hands a framework's arrays to its adapter's
``select_native``; both adapters delegate here with a :class:`Framework`
(what differs between them: host views, dtypes, device checks, wrapping) and
an ops object satisfying :class:`ArrayOps` (the calls the on-device loops of
:mod:`tops_adapters._native_solvers` make). Everything else, the choice of
route and the assembly of the :class:`~tops_core.Selection`, is written once.

Routes, in the order ``"auto"`` tries them:

``"core"``
    The data already lives in host memory (a PyTorch CPU tensor; an MLX array
    on Apple Silicon's unified memory or ``mlx[cpu]``): the NumPy/Numba core
    runs on a zero-copy NumPy view and the answer comes back in the caller's
    framework. Every method applies; answers are the core's exactly.
``"triton"``
    A CUDA tensor, Triton installed, and an objective (methods ``"auto"``,
    ``"greedy"``, ``"lazy"``: the same picks, each with its own certificate)
    or :class:`~tops_core.TOPSRule`: the fused kernels of
    :mod:`tops_adapters.triton_kernels` (one persistent program per batch
    row, all ``k`` steps in one launch). Rows where a step's lead was within
    the core's rounding-drift bound are flagged by the kernel and re-run
    exactly by the core on a host copy (one read of the flags per call; the
    core's ``Incremental``, whose order and gains are greedy's and lazy's,
    and their own certificate from the kernel along that order).
``"loop"``
    The plain on-device loops of :mod:`tops_adapters._native_solvers`: the
    reference the kernels are tested against, and the route for the other
    rules on a GPU.

:func:`use_route` forces a route (tests, benchmarks); ``"auto"`` may change
speed, never answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tops_adapters import _native_solvers as native
from tops_core._validate import InvalidInputError, check_budget, check_choice
from tops_core.objective import Objective
from tops_core.registry import method_of
from tops_core.selection import Selection
from tops_core.solvers._result import CLOSES_RTOL

__all__ = ["ROUTES", "ArrayOps", "Framework", "select_native", "use_route", "current_route"]

#: Routes a native selection can take (see the module docstring).
ROUTES = ("auto", "core", "triton", "loop")

_ROUTE: ContextVar[str] = ContextVar("tops_native_route", default="auto")


@contextmanager
def use_route(route: str) -> Iterator[None]:
    """Force the route of native selections inside the block.

    Parameters
    ----------
    route : {"auto", "core", "triton", "loop"}
        ``"auto"`` picks the fastest route that applies. A forced route that
        cannot run the call (``"core"`` on GPU data, ``"triton"`` without
        Triton or for a method the kernel does not implement) raises
        :class:`~tops_core.InvalidInputError`.
    """
    token = _ROUTE.set(check_choice("route", route, ROUTES))
    try:
        yield
    finally:
        _ROUTE.reset(token)


def current_route() -> str:
    """The route forced by the innermost :func:`use_route` (``"auto"`` if none)."""
    return _ROUTE.get()


@runtime_checkable
class ArrayOps(Protocol):
    """The calls the on-device loops make, spelled once per framework.

    Arrays are batched: scores ``(B, N)``, similarities ``(B, N, N)``; every
    reduction is over the last axis. ``bool``, ``index`` and ``acc`` are the
    framework's boolean, index (int64) and accumulation dtypes.
    """

    bool: Any
    index: Any
    acc: Any

    # construction
    def zeros(self, shape, dtype): ...
    def full(self, shape, value, dtype): ...
    def ones_like(self, x): ...
    def arange(self, n): ...
    def eye(self, n): ...
    def upper_mask(self, k): ...
    def stack(self, items, batch, dtype): ...

    # elementwise and reductions over the last axis
    def where(self, cond, x, y): ...
    def maximum(self, x, y): ...
    def minimum(self, x, y): ...
    def relu(self, x): ...
    def at_least(self, x, lo: float): ...
    def sqrt(self, x): ...
    def cast(self, x, dtype): ...
    def to_acc(self, x): ...
    def asum(self, x): ...
    def amax(self, x): ...
    def amin(self, x): ...
    def argmax(self, x): ...
    def argmin(self, x): ...
    def topk_sum(self, x, k): ...

    # gathers and layout
    def pick(self, x, p): ...
    def take(self, x, idx): ...
    def row(self, x3, p): ...
    def rows(self, x3, idx): ...
    def col(self, x3, p): ...
    def cummax(self, x3): ...
    def concat_steps(self, a, b): ...
    def swap_last(self, x3): ...
    def submatrix(self, s, idx): ...
    def diagonal(self, s): ...
    def transpose(self, s): ...
    def coverage(self, x3, m, w): ...
    def vecmat(self, v, a): ...
    def any_equal(self, order, n): ...
    def set_row(self, buf, t, row): ...
    def stable_topk_order(self, r, k): ...
    def sort_last(self, x): ...

    # end of a loop step: a lazy framework evaluates its state here
    def step(self, *arrays): ...


class SharedOps:
    """The :class:`ArrayOps` calls that PyTorch and MLX spell alike.

    Subclasses set ``xp`` (``torch`` or ``mlx.core``) and add the calls whose
    spelling differs (gathers, sorts, dtype and device arguments).
    """

    xp: Any

    def where(self, cond, x, y):
        return self.xp.where(cond, x, y)

    def maximum(self, x, y):
        return self.xp.maximum(x, y)

    def minimum(self, x, y):
        return self.xp.minimum(x, y)

    def sqrt(self, x):
        return self.xp.sqrt(x)

    def ones_like(self, x):
        return self.xp.ones_like(x)

    def to_acc(self, x):
        return self.cast(x, self.acc)

    @staticmethod
    def asum(x):
        return x.sum(-1)

    @staticmethod
    def step(*arrays):
        """Nothing to do for an eager framework (a GPU queues the kernels asynchronously)."""


class Framework(Protocol):
    """What an adapter module supplies to :func:`select_native` (its real differences)."""

    def describe(self, x) -> str:
        """Shape, dtype (and device) of ``x`` for messages, never the data."""

    def is_real(self, dtype) -> bool:
        """Whether ``dtype`` is a floating or integer dtype."""

    def host_view(self, x) -> np.ndarray | None:
        """A NumPy view of ``x`` without a copy (half precision widened), or ``None`` on a GPU."""

    def wrap(self, arr: np.ndarray, like, dtype=None):
        """``arr`` as the framework's array next to ``like`` (``dtype``: the framework's)."""

    def acc_dtype(self, like):
        """The dtype of ``value`` and ``upper_bound`` (float64 where the device has it)."""

    def prepare(self, scores, sim, need_symmetric: bool, focus: float):
        """``(ops, r, s)`` batched in the compute dtype, or ``None`` when the core must reject."""

    def triton_ready(self, r) -> bool:
        """Whether the fused Triton kernel can run on ``r``'s device."""

    def finish(self, fields: dict) -> dict:
        """Last touch on the answer's arrays (MLX evaluates them; PyTorch returns them)."""


def shapes_ok(scores, sim, is_real) -> bool:
    """The core's shape and dtype requirements (its ``check_problem``), without reading data."""
    if scores.ndim not in (1, 2) or sim.ndim != scores.ndim + 1:
        return False
    n = scores.shape[-1]
    if n == 0 or (scores.ndim == 2 and scores.shape[0] == 0):
        return False
    return tuple(sim.shape) == (*scores.shape, n) and is_real(scores.dtype) and is_real(sim.dtype)


def select_native(fw: Framework, scores, sim, k, objective, solver, reference):
    """Select on the framework's arrays by the route :func:`use_route` forces (default: fastest).

    Returns ``None`` when the core must answer through a host copy (methods
    with no native loop on a GPU) or reject the input with its own error.
    """
    route = current_route()
    if route in ("auto", "core"):
        views = fw.host_view(scores), fw.host_view(sim)
        if views[0] is not None and views[1] is not None:
            return _select_on_host(fw, scores, sim, views, k, objective, solver, reference)
        if route == "core":
            raise InvalidInputError(
                "route 'core' needs arrays in host memory; got scores as "
                f"{fw.describe(scores)} and sim as {fw.describe(sim)}"
            )
    from tops_core.api import native_may_run

    if not native_may_run(scores, sim, objective, reference):
        return None  # float32 could overflow, or NaN: the core answers in float64 ("+host") or names it
    plan = native.native_plan(objective, solver)
    if plan is None or not shapes_ok(scores, sim, fw.is_real):
        if route == "triton":
            _refuse_triton(objective, solver, "the input is not a batch of square similarities")
        return None
    name, lazy = plan
    if isinstance(objective, Objective):
        evaluator, need_symmetric = objective, objective.needs_symmetric
    else:
        if reference is not None and not isinstance(reference, Objective):
            return None
        evaluator = Objective() if reference is None else reference
        need_symmetric = objective.needs_symmetric or evaluator.needs_symmetric
    prepared = fw.prepare(scores, sim, need_symmetric, evaluator.focus)
    if prepared is None:
        return None
    ops, r, s = prepared
    k = check_budget(k, scores.shape[-1])  # after the value checks, in the core's order
    batched = scores.ndim == 2
    use_triton = _wants_triton(route, fw, r, objective, solver)
    if use_triton:
        result, name = _run_triton(ops, objective, solver, evaluator, r, s, k)
    elif isinstance(objective, Objective):
        result = native.objective_greedy(ops, objective, r, s, k, lazy=lazy)
    else:
        order = native.rule_order(ops, objective, r, s, k)
        result = native.certify_order(ops, evaluator, r, s, order)
    return _assemble(fw, ops, result, name, k, r.shape[-1], batched)


def _triton_applies(objective, solver) -> bool:
    """Whether a fused kernel runs this objective or rule with this method."""
    entry = method_of(solver if isinstance(objective, Objective) else objective)
    return entry is not None and entry.fused


def _run_triton(ops, objective, solver, evaluator, r, s, k):
    """The fused kernel's answer and the core's method name; near-tied rows re-run by the core."""
    import torch

    from tops_adapters import triton_kernels
    from tops_core.api import _select_numpy
    from tops_core.solvers import Incremental

    def host(x):
        return x.cpu().numpy()

    if isinstance(objective, Objective):
        result = triton_kernels.incremental_greedy(objective, r, s, k, certificate=solver.name)

        def exact_row(b):
            # The core's Incremental: greedy's and lazy's order and gains bit for bit, in a fraction
            # of their time; their own certificate then comes from the kernel along that order.
            core = _select_numpy(host(r[b]), host(s[b]), k, objective, Incremental(), None)
            bound = core.upper_bound
            if solver.name != "incremental":
                forced = torch.as_tensor(core.order, device=r.device)[None]
                bound = triton_kernels.incremental_greedy(
                    objective, r[b : b + 1], s[b : b + 1], k, certificate=solver.name, forced=forced
                ).bound[0]
            return _ExactRow(core.order, core.gains, core.value, bound)

        return triton_kernels.settle_near_ties(result, exact_row), solver.name
    order = triton_kernels.tops_rule_order(objective, r, s, k)
    order = triton_kernels.settle_near_ties(
        order, lambda b: _ExactRow(objective.order(host(r[b]).astype(np.float64), host(s[b]), k))
    ).order
    # The reference objective's gains, value and bound along that order: the same fused pass, forced.
    return triton_kernels.incremental_greedy(evaluator, r, s, k, forced=order), objective.name


class _ExactRow:
    """One row's exact answer for :func:`~tops_adapters.triton_kernels.settle_near_ties`."""

    def __init__(self, order, gains=None, value=None, upper_bound=None) -> None:
        self.order, self.gains, self.value, self.upper_bound = order, gains, value, upper_bound


def _wants_triton(route, fw, r, objective, solver) -> bool:
    applies = _triton_applies(objective, solver)
    if route == "triton":
        if not applies:
            _refuse_triton(
                objective,
                solver,
                "the fused kernels run an objective's 'auto', 'greedy' or 'lazy', and TOPSRule",
            )
        from tops_adapters import triton_kernels

        if not triton_kernels.available():
            raise InvalidInputError("route 'triton' needs the triton package (pip install 'tops-prune[gpu]')")
        return True
    return route == "auto" and applies and fw.triton_ready(r)


def _refuse_triton(objective, solver, why):
    raise InvalidInputError(
        f"route 'triton' cannot run this call: {why}; got objective={type(objective).__name__}, "
        f"method={getattr(solver, 'name', None)!r}"
    )


def _select_on_host(fw, scores, sim, views, k, objective, solver, reference) -> Selection:
    """The core on zero-copy host views; the answer in the caller's framework."""
    from tops_core.api import _select_numpy

    host = _select_numpy(
        views[0],
        views[1],
        k,
        objective,
        solver,
        reference,
        scores_given=fw.describe(scores),
        sim_given=fw.describe(sim),
    )
    acc = fw.acc_dtype(scores)
    fields = {
        "indices": fw.wrap(host.indices, scores),
        "order": fw.wrap(host.order, scores),
        "gains": fw.wrap(np.asarray(host.gains, dtype=np.float64), scores, acc),
        "value": fw.wrap(np.asarray(host.value, dtype=np.float64), scores, acc),
        "upper_bound": fw.wrap(np.asarray(host.upper_bound, dtype=np.float64), scores, acc),
        "optimal": fw.wrap(np.asarray(host.optimal, dtype=bool), scores),
    }
    return Selection(method=host.method, **fw.finish(fields))


def _assemble(fw, ops, result: native.NativeResult, name: str, k: int, n: int, batched: bool) -> Selection:
    """The core's ``Selection`` from batched device arrays (no host sync)."""
    bound = ops.maximum(result.bound, result.value)
    closes = bound - result.value <= CLOSES_RTOL * ops.at_least(abs(bound), 1.0)
    order = ops.cast(result.order, ops.index)
    fields = {
        "indices": ops.sort_last(order),
        "order": order,
        "gains": ops.cast(result.gains, ops.acc),
        "value": result.value,
        "upper_bound": bound,
        "optimal": closes | (k == n),
    }
    if not batched:
        fields = {key: v[0] for key, v in fields.items()}
    return Selection(method=name, **fw.finish(fields))
