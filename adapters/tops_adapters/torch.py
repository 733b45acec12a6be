"""PyTorch adapter for ``tops_core.select``: CPU tensors through the Numba core, GPUs on the device.

Routes (see :mod:`tops_adapters._native`; :func:`use_route` forces one):

* CPU tensors run the NumPy/Numba core on a zero-copy ``Tensor.numpy()``
  view, every method, answers identical to the core's (same ``method``
  name); half precision is widened to a float32 copy first.
* CUDA tensors with Triton installed run the objective's ``"auto"``,
  ``"greedy"`` and ``"lazy"``, and :class:`~tops_core.TOPSRule`, as fused
  kernels (:mod:`tops_adapters.triton_kernels`; ``method`` the core's:
  ``"incremental"`` for ``"auto"``); rows near a tie are re-run by the core.
* Otherwise, on the device, batched ``(B, N)`` / ``(B, N, N)`` as one loop:
  the objective's greedy (``"auto"`` runs as ``"greedy"``, ``"lazy"``,
  ``"greedy"``), :class:`~tops_core.TOPSRule`, :class:`~tops_core.TopK`,
  :class:`~tops_core.DivPrune` and :class:`~tops_core.DPP`. Everything else
  (``"stochastic"``, ``"exact"``, :class:`~tops_core.SCOPE`) on a GPU runs
  in the core through a host copy, and ``Selection.method`` ends in
  ``"+host"``.

Semantics of an answer (every route):

* ``indices`` and ``order`` are ``int64`` tensors on the input's device;
  ``gains`` are ``float64`` tensors there.
* ``value``, ``upper_bound`` (``float64``) and ``optimal`` (``bool``) are 0-d
  tensors (``(B,)`` when batched) on the device, so that nothing waits for the
  GPU; ``float(sel.value)`` syncs when you need the number.
* Computation runs under ``torch.no_grad()``; on the device ``float16``/
  ``bfloat16`` are computed in ``float32``, ``float32`` in ``float32``,
  ``float64`` and integer inputs in ``float64`` (as the core widens
  integers). Mixed real dtypes are promoted by the same rule.
* Device input checks run on the device and are read back once, before the
  loop; bad input is handed to the core, which raises its usual error.
"""

from __future__ import annotations

import numpy as np
import torch

from tops_adapters import _native
from tops_adapters._native import SharedOps, use_route
from tops_core._validate import InvalidInputError

__all__ = ["describe", "to_numpy", "from_numpy", "check_pair", "select_native", "TorchOps", "use_route"]

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


class TorchOps(SharedOps):
    """:class:`~tops_adapters._native.ArrayOps` for PyTorch: the calls PyTorch spells its own way."""

    xp = torch

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
    def cast(x, dtype):
        return x.to(dtype)

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
    def sort_last(x):
        return torch.sort(x, dim=-1).values

    @staticmethod
    def relu(x):
        return x.clamp(min=0)

    @staticmethod
    def at_least(x, lo):
        return x.clamp(min=lo)


class _Torch:
    """The PyTorch side of :class:`~tops_adapters._native.Framework`."""

    describe = staticmethod(describe)
    is_real = staticmethod(_is_real)

    @staticmethod
    def host_view(x: torch.Tensor) -> np.ndarray | None:
        if x.device.type != "cpu":
            return None
        x = x.detach()
        if x.dtype in _HALF:
            return x.float().numpy()  # NumPy has no bfloat16: a float32 copy
        # Lazy conjugate/negative views would refuse .numpy(); resolving them is a no-op otherwise.
        return x.resolve_conj().resolve_neg().numpy()

    @staticmethod
    def wrap(arr: np.ndarray, like: torch.Tensor, dtype=None) -> torch.Tensor:
        # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
        out = torch.from_numpy(np.require(arr, requirements="C"))
        if dtype is not None:
            out = out.to(dtype)
        return out if like.device.type == "cpu" else out.to(like.device)

    @staticmethod
    def acc_dtype(like) -> torch.dtype:
        return torch.float64

    @staticmethod
    def prepare(scores, sim, need_symmetric, focus):
        dtype = compute_dtype(scores, sim)
        r, s = scores.detach().to(dtype), sim.detach().to(dtype)
        if scores.ndim == 1:
            r, s = r[None], s[None]
        if not _values_ok(r, s, need_symmetric, focus):
            return None
        return TorchOps(r.device), r, s

    @staticmethod
    def triton_ready(r: torch.Tensor) -> bool:
        if r.device.type != "cuda":
            return False
        from tops_adapters import triton_kernels

        return triton_kernels.available()

    @staticmethod
    def finish(fields: dict) -> dict:
        return fields


_TORCH = _Torch()


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
    """Select on tensors (see the module docstring); ``None`` means "use the core through a host copy".

    Also ``None`` for device input the core must reject, so that the core
    raises its own error with its own wording.
    """
    return _native.select_native(_TORCH, scores, sim, k, objective, solver, reference)
