"""The optional Numba kernels: whether they apply, and the modules that hold them.

Every compiled kernel lives in a module that imports Numba at its top; they are
loaded here on first use only, so the core imports without the ``[fast]`` extra
and without the cost of loading Numba. ``coverage_all``, ``columns_of`` and
``run_on_columns`` are the Python steps every kernel user shares.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import numpy as np

from tops_core._threads import in_background, threads_for
from tops_core._validate import exactly_symmetric, known_symmetry, spot_asymmetry

T = TypeVar("T")

__all__ = [
    "numba_available",
    "fast_for",
    "gain_kernels",
    "matrix_kernels",
    "greedy_kernels",
    "rule_kernels",
    "feature_kernels",
    "coverage_all",
    "columns_of",
    "run_on_columns",
]

# Rows of sim streamed per call when the initial gains are summed (bounds nothing
# but the call overhead: the kernel reads the rows in place).
_ROWS = 1024


def numba_available() -> bool:
    """Whether the optional Numba kernels can be used (without importing Numba)."""
    return importlib.util.find_spec("numba") is not None


def fast_for(sim: np.ndarray) -> bool:
    """Whether the compiled kernels apply to ``sim`` (Numba installed, float32 or float64)."""
    return sim.dtype in (np.float32, np.float64) and numba_available()


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"tops_core.{name}")


def gain_kernels() -> ModuleType:
    """:mod:`tops_core._gain_kernels`, the compiled gain layer (imports Numba on first use)."""
    return _load("_gain_kernels")


def matrix_kernels() -> ModuleType:
    """:mod:`tops_core._matrix_kernels` (transpose, max over columns)."""
    return _load("_matrix_kernels")


def greedy_kernels() -> ModuleType:
    """:mod:`tops_core.solvers._greedy_kernels` (incremental greedy, gains along an order)."""
    return _load("solvers._greedy_kernels")


def rule_kernels() -> ModuleType:
    """:mod:`tops_core._rule_kernels` (the TOPS rule's steps)."""
    return _load("_rule_kernels")


def feature_kernels() -> ModuleType:
    """:mod:`tops_core._feature_kernels` (features mode after its pass)."""
    return _load("_feature_kernels")


def coverage_all(sim_rows: np.ndarray, w: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    """Canonical coverage gains of every token at running max ``m`` (default: ``S = {}``).

    One row-major pass over ``sim``, bit-identical to the column-wise kernel.
    """
    kern = gain_kernels()
    n = w.shape[0]
    m = np.zeros(n) if m is None else m
    lanes = np.zeros((8, sim_rows.shape[1]), dtype=np.float64)
    for start in range(0, n, _ROWS):
        kern.add_lanes(sim_rows[start : start + _ROWS], start, w, m, lanes)
    return kern.combine_lanes(lanes)


def columns_of(rows: np.ndarray) -> np.ndarray:
    """``rows`` itself when exactly symmetric, else its transposed copy (columns contiguous)."""
    return rows if exactly_symmetric(rows) else matrix_kernels().transpose(rows)


def run_on_columns(rows: np.ndarray, run: Callable[[np.ndarray], T]) -> T:
    """``run(cols)``, ``cols`` holding ``rows``' columns contiguously, the symmetry check overlapped.

    A symmetric ``rows`` is its own column store. When its symmetry is not
    known yet, ``rows`` is large and its first rows match its first columns,
    ``run(rows)`` starts at once while a pool thread checks the rest
    (:mod:`tops_core._threads`; the kernels release the GIL), so the check
    costs no time on a second core. Should ``rows`` still turn out asymmetric,
    that answer is discarded and ``run`` runs again on the transposed copy.
    """
    check = None
    if known_symmetry(rows) is None and threads_for(rows.size) > 1 and not spot_asymmetry(rows):
        check = in_background(exactly_symmetric, rows)
    if check is None:
        return run(columns_of(rows))
    speculative = run(rows)
    return speculative if check() else run(matrix_kernels().transpose(rows))
