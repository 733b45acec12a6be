"""The answer every selector returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["ArrayT", "Selection"]

#: The caller's array type (``numpy.ndarray``, ``torch.Tensor``, ``mlx.core.array``): a selection's
#: arrays come back in the framework, and on the device, of the input.
ArrayT = TypeVar("ArrayT")


@dataclass(frozen=True)
class Selection(Generic[ArrayT]):
    """A selected set of tokens with its certificate.

    Attributes
    ----------
    indices : array, shape (k,) or (B, k)
        Selected token indices, ascending (original token order), int64, in the
        caller's framework and on the caller's device.
    order : array, shape (k,) or (B, k)
        The same indices in pick order. For the greedy family ``order[:m]`` is
        the answer for budget ``m``; for ``exact`` it equals ``indices``.
    gains : array, shape (k,) or (B, k)
        ``f(S_t + order[t]) - f(S_t)`` along ``order`` under the objective that
        was optimised (for a rule: under the reference objective that
        evaluates it).
    value : float, numpy.ndarray of shape (B,), or a framework array
        ``f(indices)`` in float64, by the objective's definition. Native
        PyTorch/MLX selections return 0-d (or ``(B,)``) arrays on the input's
        device, so reading them is the caller's choice of when to sync.
    upper_bound : same type as ``value``
        A proven ceiling on ``max_{|T| = k} f(T)``: the online bound
        ``g(S_t) + sum of the k largest gains of g`` minimised over steps
        (``g`` = ``f`` for monotone objectives), or HiGHS's dual bound for
        ``exact``. ``value / upper_bound`` certifies the answer.
    method : str
        What ran, e.g. ``"lazy"``, ``"exact"``, ``"tops_rule"``; a suffix
        ``"+host"`` says a framework's input went through a host copy.
    optimal : bool, numpy.ndarray of shape (B,), or a framework array
        Whether the answer is proven optimal (exact solve, or a certificate that
        closes).
    """

    indices: ArrayT
    order: ArrayT
    gains: ArrayT
    value: ArrayT | float
    upper_bound: ArrayT | float
    method: str
    optimal: ArrayT | bool

    @classmethod
    def empty(cls, method: str) -> Selection[np.ndarray]:
        """The answer for ``k = 0`` (any ``N``, also ``0``): no token, ``f = 0``, proven optimal."""
        none = np.zeros(0, dtype=np.int64)
        return Selection(
            indices=none,
            order=none,
            gains=np.zeros(0),
            value=0.0,
            upper_bound=0.0,
            method=method,
            optimal=True,
        )

    @property
    def ratio(self) -> ArrayT | float:
        """``value / upper_bound``: a lower bound on the fraction of the optimum reached.

        ``1.0`` where ``upper_bound`` is ``0`` (the optimum is ``0`` as well).
        Computed in the framework of ``value`` (on its device for native
        selections); a Python float for unbatched NumPy answers.
        """
        # The elementwise arithmetic below is NumPy's or the framework's: typed dynamically.
        value: Any = self.value
        bound: Any = self.upper_bound
        if isinstance(value, (float, int, np.floating, np.ndarray)):
            value = np.asarray(value, dtype=np.float64)
            bound = np.asarray(bound, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out: Any = np.where(bound > 0, value / np.where(bound > 0, bound, 1.0), 1.0)
            return float(out) if out.ndim == 0 else out
        # Framework arrays (torch, mlx) support the same elementwise operators.
        positive = bound > 0
        safe = bound * positive + (1 - positive * 1)  # bound where positive, 1 elsewhere
        return (value / safe) * positive + (1 - positive * 1)
