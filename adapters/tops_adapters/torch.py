"""PyTorch adapter for ``tops_core.select``: on-device selection, CPU and CUDA.

Native (on the input's device, batched ``(B, N)`` / ``(B, N, N)`` as one loop):
the certified objective's greedy (``method="auto"``, ``"lazy"``, ``"greedy"``),
:class:`~tops_core.TOPSRule`, :class:`~tops_core.TopK`,
:class:`~tops_core.DivPrune` and :class:`~tops_core.DPP`. Everything else
(``"stochastic"``, ``"exact"``, :class:`~tops_core.SCOPE`) runs in the core
through a host copy, and ``Selection.method`` ends in ``"+host"``.

Semantics of a native answer:

* ``indices`` and ``order`` are ``int64`` tensors on the input's device;
  ``gains`` are ``float64`` tensors there.
* ``value``, ``upper_bound`` (``float64``) and ``optimal`` (``bool``) are 0-d
  tensors (``(B,)`` when batched) on the device, so that nothing waits for the
  GPU; ``float(sel.value)`` syncs when you need the number.
* Computation runs under ``torch.no_grad()``; ``float16``/``bfloat16`` are
  computed in ``float32``, ``float32`` in ``float32``, ``float64`` and
  integer inputs in ``float64`` (as the core widens integers). Mixed real
  dtypes are promoted by the same rule.
* Input checks run on the device and are read back once, before the loop;
  bad input is handed to the core, which raises its usual error.
"""

from __future__ import annotations

import numpy as np
import torch

from tops_adapters import _native_solvers as native
from tops_core._validate import InvalidInputError, check_budget
from tops_core.objective import Objective
from tops_core.selection import Selection

__all__ = ["describe", "to_numpy", "from_numpy", "check_pair", "select_native", "TorchOps"]

_HALF = (torch.float16, torch.bfloat16)


def describe(x: torch.Tensor) -> str:
    """Shape, dtype and device of a tensor, for error messages."""
    return f"torch.Tensor with shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """Host copy as NumPy; half precision is widened to float32 (NumPy has no bfloat16)."""
    x = x.detach()
    if x.dtype in _HALF:
        x = x.float()
    return x.cpu().numpy()


def from_numpy(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``arr`` as a tensor on ``like``'s device."""
    return torch.from_numpy(np.ascontiguousarray(arr)).to(like.device)


def _is_real(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or (not dtype.is_complex and dtype != torch.bool)


def check_pair(scores: torch.Tensor, sim: torch.Tensor) -> None:
    """Reject scores and sim on different devices, or with dtypes that do not promote to a real one.

    Real dtypes (floating or integer) of any width are reconciled by promotion
    (see :func:`compute_dtype`); a real and a non-real dtype (bool, complex)
    are not.
    """
    if scores.device != sim.device:
        raise InvalidInputError(
            f"scores and sim must be on the same device; got scores as {describe(scores)} "
            f"and sim as {describe(sim)}"
        )
    if scores.dtype != sim.dtype and not (_is_real(scores.dtype) and _is_real(sim.dtype)):
        raise InvalidInputError(
            "scores and sim must have real dtypes (floating or integer) that promote to a common "
            f"float dtype; got scores as {describe(scores)} and sim as {describe(sim)}"
        )


def compute_dtype(scores: torch.Tensor, sim: torch.Tensor) -> torch.dtype:
    """float32 for half/float32 inputs, float64 when either is float64 or an integer."""
    wide = [d for d in (scores.dtype, sim.dtype) if d == torch.float64 or not d.is_floating_point]
    return torch.float64 if wide else torch.float32


class TorchOps:
    """The framework-specific calls of :mod:`tops_adapters._native_solvers`, for PyTorch."""

    bool = torch.bool
    index = torch.int64
    acc = torch.float64

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._work = None

    # construction
    def zeros(self, shape, dtype):
        return torch.zeros(shape, dtype=dtype, device=self.device)

    def full(self, shape, value, dtype):
        return torch.full(shape, value, dtype=dtype, device=self.device)

    def ones_like(self, x):
        return torch.ones_like(x)

    def arange(self, n):
        return torch.arange(n, device=self.device)

    def eye(self, n):
        return torch.eye(n, dtype=torch.bool, device=self.device)

    def upper_mask(self, k):
        return torch.ones(k, k, dtype=self.acc, device=self.device).triu(1)

    def stack(self, items, batch, dtype):
        """Stack ``(B, ...)`` items along a new axis 1 (``(B, 0)`` for none)."""
        if not items:
            return torch.zeros((batch, 0), dtype=dtype, device=self.device)
        return torch.stack(items, dim=1)

    # elementwise and reductions over the last axis
    @staticmethod
    def where(cond, x, y):
        return torch.where(cond, x, y)

    @staticmethod
    def maximum(x, y):
        return torch.maximum(x, y)

    @staticmethod
    def minimum(x, y):
        return torch.minimum(x, y)

    @staticmethod
    def relu(x):
        return x.clamp(min=0)

    @staticmethod
    def sqrt(x):
        return torch.sqrt(x)

    @staticmethod
    def cast(x, dtype):
        return x.to(dtype)

    def to_acc(self, x):
        return x.to(self.acc)

    @staticmethod
    def asum(x):
        return x.sum(-1)

    @staticmethod
    def amax(x):
        return x.amax(-1)

    @staticmethod
    def amin(x):
        return x.amin(-1)

    @staticmethod
    def argmax(x):
        return x.argmax(-1)

    @staticmethod
    def argmin(x):
        return x.argmin(-1)

    def topk_sum(self, x, k):
        """Sum of the ``k`` largest positive entries per row (the core's ``top_sum``)."""
        if k == 0:
            return torch.zeros(x.shape[:-1], dtype=self.acc, device=self.device)
        return torch.topk(x, k, dim=-1, sorted=False).values.clamp(min=0).to(self.acc).sum(-1)

    # gathers
    @staticmethod
    def pick(x, p):
        return torch.gather(x, -1, p[:, None])[:, 0]

    @staticmethod
    def take(x, idx):
        return torch.gather(x, -1, idx)

    @staticmethod
    def row(x3, p):
        return x3[torch.arange(x3.shape[0], device=x3.device), p]

    @staticmethod
    def rows(x3, idx):
        return torch.gather(x3, 1, idx[:, :, None].expand(-1, -1, x3.shape[2]))

    @staticmethod
    def cummax(x3):
        return torch.cummax(x3, dim=1).values

    @staticmethod
    def concat_steps(a, b):
        return torch.cat([a, b], dim=1)

    @staticmethod
    def swap_last(x3):
        return x3.transpose(-1, -2)

    @staticmethod
    def col(x3, p):
        return torch.gather(x3, 2, p[:, None, None].expand(-1, x3.shape[1], 1))[:, :, 0]

    @staticmethod
    def submatrix(s, idx):
        rows = torch.gather(s, 1, idx[:, :, None].expand(-1, -1, s.shape[2]))
        return torch.gather(rows, 2, idx[:, None, :].expand(-1, idx.shape[1], -1))

    @staticmethod
    def diagonal(s):
        return torch.diagonal(s, dim1=-2, dim2=-1)

    @staticmethod
    def transpose(s):
        return s.transpose(-1, -2).contiguous()

    def coverage(self, x3, m, w):
        """``sum_j w[b, j] * max(0, x3[b, i, j] - m[b, j])`` for every ``(b, i)``.

        One reused ``(B, N, N)`` work buffer and in-place passes: allocating the
        temporary every step costs more than the arithmetic on a CPU.
        """
        if self._work is None or self._work.shape != x3.shape or self._work.dtype != x3.dtype:
            self._work = torch.empty_like(x3)
        work = torch.sub(x3, m[:, None, :], out=self._work)
        work.clamp_(min=0).mul_(w[:, None, :])
        return work.sum(-1)

    @staticmethod
    def vecmat(v, a):
        return torch.matmul(v[:, None, :], a)[:, 0, :]

    def any_equal(self, order, n):
        return (order[:, :, None] == self.arange(n)[None, None, :]).any(1)

    @staticmethod
    def set_row(buf, t, row):
        buf[:, t] = row
        return buf

    @staticmethod
    def stable_topk_order(r, k):
        return torch.sort(-r, dim=-1, stable=True).indices[:, :k]

    @staticmethod
    def step(*arrays):
        """Nothing to do: PyTorch runs eagerly (CUDA queues the kernels asynchronously)."""


_native_plan = native.native_plan


def _shapes_ok(scores: torch.Tensor, sim: torch.Tensor) -> bool:
    """The core's shape and dtype requirements (its ``check_problem``), without reading data."""
    if scores.ndim not in (1, 2) or sim.ndim != scores.ndim + 1:
        return False
    n = scores.shape[-1]
    if n == 0 or (scores.ndim == 2 and scores.shape[0] == 0):
        return False
    return tuple(sim.shape) == (*scores.shape, n) and _is_real(scores.dtype) and _is_real(sim.dtype)


def _values_ok(r: torch.Tensor, s: torch.Tensor, need_symmetric: bool, focus: float) -> bool:
    """The core's value checks on the device, read back once (the only sync before the loop)."""
    bad = ~torch.isfinite(r).all() | ~torch.isfinite(s).all() | (s < 0).any()
    if need_symmetric:
        tol = 16 * torch.finfo(s.dtype).eps * torch.clamp(s.abs().amax(), min=1.0)
        bad = bad | ((s - s.transpose(-1, -2)).abs().amax() > tol)
    if focus > 0:
        bad = bad | (r < 0).any()
    return not bool(bad)


@torch.no_grad()
def select_native(scores, sim, k, objective, solver, reference):
    """On-device selection; ``None`` means "use the core through a host copy".

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
    r = scores.detach().to(dtype)
    s = sim.detach().to(dtype)
    if not batched:
        r, s = r[None], s[None]
    if not _values_ok(r, s, need_symmetric, evaluator.focus):
        return None
    k = check_budget(k, scores.shape[-1])  # after the value checks, in the core's order
    ops = TorchOps(r.device)
    if isinstance(objective, Objective):
        result = native.objective_greedy(ops, objective, r, s, k, lazy=lazy)
    else:
        order = native.rule_order(ops, objective, r, s, k)
        result = native.certify_order(ops, evaluator, r, s, order)
    return _selection(result, name, k, r.shape[-1], batched)


def _selection(result: native.NativeResult, name: str, k: int, n: int, batched: bool) -> Selection:
    """Assemble the core's ``Selection`` from device arrays (no host sync)."""
    bound = torch.maximum(result.bound, result.value)
    closes = bound - result.value <= 1e-12 * torch.clamp(bound.abs(), min=1.0)
    optimal = closes | (k == n)
    order = result.order.to(torch.int64)
    fields = {
        "indices": torch.sort(order, dim=-1).values,
        "order": order,
        "gains": result.gains.to(torch.float64),
        "value": result.value,
        "upper_bound": bound,
        "optimal": optimal,
    }
    if not batched:
        fields = {key: v[0] for key, v in fields.items()}
    return Selection(method=name, **fields)
