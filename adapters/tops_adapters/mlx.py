"""MLX adapter for ``tops_core.select``: native selection with ``mx.array`` (Metal, or ``mlx[cpu]``).

The same native methods and semantics as :mod:`tops_adapters.torch` (the
loops are shared, :mod:`tops_adapters._native_solvers`): the objective's
greedy (``"auto"``, ``"lazy"``, ``"greedy"``), ``TOPSRule``, ``TopK``,
``DivPrune`` and ``DPP`` natively; other methods through a host copy with
``"+host"`` in ``Selection.method``.

MLX specifics:

* Each step ends with one ``mx.eval`` of the loop state, so the lazy graph
  stays one step deep.
* ``bfloat16``/``float16`` are computed in ``float32`` (NumPy cannot take
  ``bfloat16`` directly; the host copy widens it too).
* Metal has no ``float64``: on the GPU everything, including ``value`` and
  ``upper_bound``, is ``float32``. On the CPU device (``mlx[cpu]``) integer
  and ``float64`` inputs are computed, and ``value``/``upper_bound``
  accumulated, in ``float64`` as in the core.
* ``indices`` and ``order`` are ``int64`` arrays; ``value``,
  ``upper_bound`` and ``optimal`` are 0-d arrays (``(B,)`` when batched).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from tops_adapters import _native_solvers as native
from tops_core._validate import InvalidInputError, check_budget
from tops_core.objective import Objective
from tops_core.selection import Selection

__all__ = ["describe", "to_numpy", "from_numpy", "check_pair", "select_native", "MlxOps"]


def describe(x: mx.array) -> str:
    """Shape and dtype of an MLX array, for error messages."""
    return f"mlx.core.array with shape {tuple(x.shape)}, dtype {x.dtype}"


def to_numpy(x: mx.array) -> np.ndarray:
    """Host copy as NumPy; bfloat16/float16 are widened to float32 first."""
    if x.dtype in (mx.bfloat16, mx.float16):
        x = x.astype(mx.float32)
    return np.array(x)


def from_numpy(arr: np.ndarray, like: mx.array) -> mx.array:
    """``arr`` as an MLX array."""
    return mx.array(arr)


def _is_real(dtype) -> bool:
    return mx.issubdtype(dtype, mx.floating) or mx.issubdtype(dtype, mx.integer)


def _on_cpu() -> bool:
    return mx.default_device().type == mx.DeviceType.cpu


def check_pair(scores: mx.array, sim: mx.array) -> None:
    """Reject dtypes that do not promote to a common real dtype (MLX shares one memory: no devices)."""
    if scores.dtype != sim.dtype and not (_is_real(scores.dtype) and _is_real(sim.dtype)):
        raise InvalidInputError(
            "scores and sim must have real dtypes (floating or integer) that promote to a common "
            f"float dtype; got scores as {describe(scores)} and sim as {describe(sim)}"
        )


def compute_dtype(scores: mx.array, sim: mx.array):
    """float32, or float64 on the CPU device when either input is float64 or an integer."""
    wide = [d for d in (scores.dtype, sim.dtype) if d == mx.float64 or not mx.issubdtype(d, mx.floating)]
    return mx.float64 if wide and _on_cpu() else mx.float32


class MlxOps:
    """The framework-specific calls of :mod:`tops_adapters._native_solvers`, for MLX."""

    bool = mx.bool_
    index = mx.int64

    def __init__(self) -> None:
        self.acc = mx.float64 if _on_cpu() else mx.float32

    # construction
    @staticmethod
    def zeros(shape, dtype):
        return mx.zeros(shape, dtype=dtype)

    @staticmethod
    def full(shape, value, dtype):
        return mx.full(shape, value, dtype=dtype)

    @staticmethod
    def ones_like(x):
        return mx.ones_like(x)

    @staticmethod
    def arange(n):
        return mx.arange(n)

    @staticmethod
    def eye(n):
        return mx.eye(n).astype(mx.bool_)

    def upper_mask(self, k):
        return mx.triu(mx.ones((k, k), dtype=self.acc), k=1)

    @staticmethod
    def stack(items, batch, dtype):
        """Stack ``(B, ...)`` items along a new axis 1 (``(B, 0)`` for none)."""
        if not items:
            return mx.zeros((batch, 0), dtype=dtype)
        out = mx.stack(items, axis=1)
        return out if dtype is None else out.astype(dtype)

    # elementwise and reductions over the last axis
    @staticmethod
    def where(cond, x, y):
        return mx.where(cond, x, y)

    @staticmethod
    def maximum(x, y):
        return mx.maximum(x, y)

    @staticmethod
    def minimum(x, y):
        return mx.minimum(x, y)

    @staticmethod
    def relu(x):
        return mx.maximum(x, 0.0)

    @staticmethod
    def sqrt(x):
        return mx.sqrt(x)

    @staticmethod
    def cast(x, dtype):
        return x.astype(dtype)

    def to_acc(self, x):
        return x.astype(self.acc)

    @staticmethod
    def asum(x):
        return x.sum(-1)

    @staticmethod
    def amax(x):
        return x.max(-1)

    @staticmethod
    def amin(x):
        return x.min(-1)

    @staticmethod
    def argmax(x):
        return mx.argmax(x, axis=-1)

    @staticmethod
    def argmin(x):
        return mx.argmin(x, axis=-1)

    def topk_sum(self, x, k):
        """Sum of the ``k`` largest positive entries per row (the core's ``top_sum``)."""
        if k == 0:
            return mx.zeros(x.shape[:-1], dtype=self.acc)
        return mx.maximum(mx.topk(x, k, axis=-1), 0.0).astype(self.acc).sum(-1)

    # gathers
    @staticmethod
    def pick(x, p):
        return mx.take_along_axis(x, p[:, None], axis=-1)[:, 0]

    @staticmethod
    def take(x, idx):
        return mx.take_along_axis(x, idx, axis=-1)

    @staticmethod
    def row(x3, p):
        return mx.take_along_axis(x3, p[:, None, None], axis=1)[:, 0, :]

    @staticmethod
    def rows(x3, idx):
        return mx.take_along_axis(x3, idx[:, :, None], axis=1)

    @staticmethod
    def cummax(x3):
        return mx.cummax(x3, axis=1)

    @staticmethod
    def concat_steps(a, b):
        return mx.concatenate([a, b], axis=1)

    @staticmethod
    def swap_last(x3):
        return mx.swapaxes(x3, -1, -2)

    @staticmethod
    def col(x3, p):
        return mx.take_along_axis(x3, p[:, None, None], axis=2)[:, :, 0]

    @staticmethod
    def submatrix(s, idx):
        rows = mx.take_along_axis(s, idx[:, :, None], axis=1)
        return mx.take_along_axis(rows, idx[:, None, :], axis=2)

    @staticmethod
    def diagonal(s):
        return mx.diagonal(s, axis1=-2, axis2=-1)

    @staticmethod
    def transpose(s):
        return mx.swapaxes(s, -1, -2)

    @staticmethod
    def coverage(x3, m, w):
        """``sum_j w[b, j] * max(0, x3[b, i, j] - m[b, j])`` for every ``(b, i)``."""
        return (mx.maximum(x3 - m[:, None, :], 0.0) * w[:, None, :]).sum(-1)

    @staticmethod
    def vecmat(v, a):
        return (v[:, None, :] @ a)[:, 0, :]

    @staticmethod
    def any_equal(order, n):
        return mx.any(order[:, :, None] == mx.arange(n)[None, None, :], axis=1)

    @staticmethod
    def set_row(buf, t, row):
        buf[:, t] = row
        return buf

    @staticmethod
    def stable_topk_order(r, k):
        """Descending by ``r``, ties to the lowest index, whatever the sort's stability.

        The rank ``#{j: r_j > r_i} + #{j < i: r_j == r_i}`` is distinct per token,
        so sorting by it is unambiguous (O(N^2) comparisons, done once).
        """
        n = r.shape[-1]
        idx = mx.arange(n)
        above = r[:, None, :] > r[:, :, None]
        tied_before = (r[:, None, :] == r[:, :, None]) & (idx[None, :] < idx[:, None])[None]
        rank = (above | tied_before).sum(-1)
        return mx.argsort(rank, axis=-1)[:, :k]

    @staticmethod
    def step(*arrays):
        """One ``mx.eval`` per step keeps the lazy graph bounded."""
        mx.eval(*[a for a in arrays if a is not None])


_native_plan = native.native_plan


def _shapes_ok(scores: mx.array, sim: mx.array) -> bool:
    if scores.ndim not in (1, 2) or sim.ndim != scores.ndim + 1:
        return False
    n = scores.shape[-1]
    if n == 0 or (scores.ndim == 2 and scores.shape[0] == 0):
        return False
    return tuple(sim.shape) == (*scores.shape, n) and _is_real(scores.dtype) and _is_real(sim.dtype)


def _values_ok(r: mx.array, s: mx.array, need_symmetric: bool, focus: float) -> bool:
    bad = ~mx.all(mx.isfinite(r)) | ~mx.all(mx.isfinite(s)) | mx.any(s < 0)
    if need_symmetric:
        eps = float(np.finfo(np.float64 if s.dtype == mx.float64 else np.float32).eps)
        tol = 16 * eps * mx.maximum(mx.abs(s).max(), 1.0)
        bad = bad | (mx.abs(s - mx.swapaxes(s, -1, -2)).max() > tol)
    if focus > 0:
        bad = bad | mx.any(r < 0)
    return not bool(bad)


def select_native(scores, sim, k, objective, solver, reference):
    """Native selection; ``None`` means "use the core through a host copy".

    Also ``None`` for input the core must reject, so that the core raises its
    own error with its own wording.
    """
    plan = _native_plan(objective, solver)
    if plan is None or not _shapes_ok(scores, sim):
        return None
    name, lazy = plan
    if isinstance(objective, Objective):
        evaluator, need_symmetric = objective, objective.needs_symmetric
    else:
        if reference is not None and not isinstance(reference, Objective):
            return None
        evaluator = Objective() if reference is None else reference
        need_symmetric = objective.needs_symmetric or evaluator.needs_symmetric
    dtype = compute_dtype(scores, sim)
    batched = scores.ndim == 2
    r, s = scores.astype(dtype), sim.astype(dtype)
    if not batched:
        r, s = r[None], s[None]
    if not _values_ok(r, s, need_symmetric, evaluator.focus):
        return None
    k = check_budget(k, scores.shape[-1])  # after the value checks, in the core's order
    ops = MlxOps()
    if isinstance(objective, Objective):
        result = native.objective_greedy(ops, objective, r, s, k, lazy=lazy)
    else:
        order = native.rule_order(ops, objective, r, s, k)
        result = native.certify_order(ops, evaluator, r, s, order)
    bound = mx.maximum(result.bound, result.value)
    closes = bound - result.value <= 1e-12 * mx.maximum(mx.abs(bound), 1.0)
    order = result.order.astype(mx.int64)
    fields = {
        "indices": mx.sort(order, axis=-1),
        "order": order,
        "gains": result.gains.astype(ops.acc),
        "value": result.value,
        "upper_bound": bound,
        "optimal": closes | (k == r.shape[-1]),
    }
    if not batched:
        fields = {key: v[0] for key, v in fields.items()}
    mx.eval(*fields.values())
    return Selection(method=name, **fields)
