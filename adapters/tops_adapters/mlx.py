"""MLX adapter for ``tops_core.select``: ``mx.array`` (Metal, or ``mlx[cpu]``).

MLX arrays live in unified memory, so the fastest correct route (``"auto"``,
see :mod:`tops_adapters._native`) runs the NumPy/Numba core on a zero-copy
NumPy view of the evaluated arrays and answers with MLX arrays: every
method, the core's answers and ``method`` names exactly.

The on-device loops stay available with ``use_route("loop")`` (the same loops
as PyTorch's, :mod:`tops_adapters._native_solvers`): the objective's greedy
(``"auto"`` runs as ``"greedy"``, ``"lazy"``, ``"greedy"``), ``TOPSRule``,
``TopK``, ``DivPrune`` and ``DPP``.

MLX specifics:

* ``bfloat16``/``float16`` are widened to ``float32`` (NumPy cannot take
  ``bfloat16``).
* Metal has no ``float64``: with the GPU as default device, ``gains``,
  ``value`` and ``upper_bound`` are ``float32`` arrays (the core computed them
  in float64). On the CPU device (``mlx[cpu]``) they are ``float64``. In the
  loop, integer and ``float64`` inputs are computed in ``float64`` on the CPU
  device, ``float32`` on the GPU.
* The loop ends each step with one ``mx.eval`` of its state, so the lazy graph
  stays one step deep.
* ``indices`` and ``order`` are ``int64`` arrays; ``value``,
  ``upper_bound`` and ``optimal`` are 0-d arrays (``(B,)`` when batched).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from tops_adapters import _native
from tops_adapters._native import SharedOps, use_route
from tops_core._validate import InvalidInputError

__all__ = ["describe", "to_numpy", "from_numpy", "check_pair", "select_native", "MlxOps", "use_route"]

_HALF = (mx.bfloat16, mx.float16)

# NumPy dtype -> MLX dtype for the answers (mx.array(float64 ndarray) would narrow to float32).
_MX_DTYPES = {
    np.dtype(np.int64): mx.int64,
    np.dtype(np.float64): mx.float64,
    np.dtype(np.float32): mx.float32,
    np.dtype(bool): mx.bool_,
}


def describe(x: mx.array) -> str:
    """Shape and dtype of an MLX array, for error messages."""
    return f"mlx.core.array with shape {tuple(x.shape)}, dtype {x.dtype}"


def to_numpy(x: mx.array) -> np.ndarray:
    """Host copy as NumPy; bfloat16/float16 are widened to float32 first."""
    if x.dtype in _HALF:
        x = x.astype(mx.float32)
    return np.array(x)


def from_numpy(arr: np.ndarray, like: mx.array) -> mx.array:
    """``arr`` as an MLX array of the same dtype (float64 only on the CPU device)."""
    return _to_mx(arr)


def _to_mx(arr: np.ndarray, dtype=None) -> mx.array:
    if dtype is None:
        dtype = _MX_DTYPES.get(arr.dtype)
        if dtype == mx.float64 and not _on_cpu():
            dtype = mx.float32
    return mx.array(arr, dtype=dtype)


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


class MlxOps(SharedOps):
    """:class:`~tops_adapters._native.ArrayOps` for MLX: the calls MLX spells its own way."""

    xp = mx

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
    def relu(x):
        return mx.maximum(x, 0.0)

    @staticmethod
    def at_least(x, lo):
        return mx.maximum(x, lo)

    @staticmethod
    def cast(x, dtype):
        return x.astype(dtype)

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
    def sort_last(x):
        return mx.sort(x, axis=-1)

    @staticmethod
    def step(*arrays):
        """One ``mx.eval`` per step keeps the lazy graph bounded."""
        mx.eval(*[a for a in arrays if a is not None])


class _Mlx:
    """The MLX side of :class:`~tops_adapters._native.Framework`."""

    describe = staticmethod(describe)
    is_real = staticmethod(_is_real)

    @staticmethod
    def host_view(x: mx.array) -> np.ndarray:
        # Unified memory: after evaluation NumPy reads the array's own buffer (no copy).
        if x.dtype in _HALF:
            x = x.astype(mx.float32)
        return np.asarray(x)

    @staticmethod
    def wrap(arr: np.ndarray, like: mx.array, dtype=None) -> mx.array:
        return _to_mx(arr, dtype)

    @staticmethod
    def acc_dtype(like):
        return mx.float64 if _on_cpu() else mx.float32

    @staticmethod
    def prepare(scores, sim, need_symmetric, focus):
        dtype = compute_dtype(scores, sim)
        r, s = scores.astype(dtype), sim.astype(dtype)
        if scores.ndim == 1:
            r, s = r[None], s[None]
        if not _values_ok(r, s, need_symmetric, focus):
            return None
        return MlxOps(), r, s

    @staticmethod
    def triton_ready(r) -> bool:
        return False

    @staticmethod
    def finish(fields: dict) -> dict:
        mx.eval(*fields.values())
        return fields


_MLX = _Mlx()


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
    """Select on MLX arrays (see the module docstring); ``None`` means "use the core through a host copy".

    Also ``None`` for input the loop route must hand to the core, so that the
    core raises its own error with its own wording.
    """
    return _native.select_native(_MLX, scores, sim, k, objective, solver, reference)
