"""The methods compared side by side, each as ``keep(r, sim, k) -> indices``.

Seven go through :func:`tops_core.select` (the certified objective, the same
objective on the position-aware similarity :func:`tops_core.spatial` with its
defaults, and the five rules); random and a uniform grid are baselines
implemented here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import tops_core

__all__ = ["METHODS", "POSITION_AWARE", "Run", "run_method", "uniform_grid", "random_subset"]

#: Label shown in tables and pictures -> what ``select`` is given (None: a baseline).
METHODS = {
    "TOPS rule": tops_core.TOPSRule(),
    "certified objective": tops_core.Objective(),
    "position-aware objective": tops_core.Objective(),
    "top-k attention": tops_core.TopK(),
    "DivPrune": tops_core.DivPrune(),
    "SCOPE": tops_core.SCOPE(),
    "DPP": tops_core.DPP(),
    "random": None,
    "uniform grid": None,
}


#: Methods that select on ``tops_core.spatial(sim, (side, side))`` instead of ``sim``: their
#: certificate bounds the objective on that similarity, not on the plain one.
POSITION_AWARE = frozenset({"position-aware objective"})


@dataclass(frozen=True)
class Run:
    """One method's answer: kept indices (ascending), seconds, and the select() result if any."""

    indices: np.ndarray
    seconds: float
    selection: tops_core.Selection | None


def uniform_grid(k: int, side: int) -> np.ndarray:
    """``k`` patches spread evenly over a ``side x side`` grid, row-major indices, ascending.

    Lays an ``a x b`` lattice of cell centres (``a * b >= k``, near square) and
    keeps ``k`` of its points evenly spaced along the lattice's own order.
    """
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    a = max(1, round(np.sqrt(k)))
    b = int(np.ceil(k / a))
    rows = np.floor((np.arange(a) + 0.5) * side / a).astype(np.int64)
    cols = np.floor((np.arange(b) + 0.5) * side / b).astype(np.int64)
    lattice = (rows[:, None] * side + cols[None, :]).ravel()
    keep = np.round(np.linspace(0, lattice.size - 1, k)).astype(np.int64)
    return np.sort(lattice[keep])


def random_subset(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` of ``n`` tokens uniformly at random (seeded), ascending."""
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)).astype(np.int64)


def run_method(
    label: str, r: np.ndarray, sim: np.ndarray, k: int, side: int, seed: int = 0, repeats: int = 3
) -> Run:
    """Run one method; its time is the best of ``repeats`` runs (the CPU is shared and noisy).

    For the ``select`` methods the time includes input checks and the certificate (and, for
    :data:`POSITION_AWARE` methods, building the position-aware similarity).
    """
    spec = METHODS[label]
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        if label == "random":
            idx, sel = random_subset(r.shape[0], k, seed), None
        elif label == "uniform grid":
            idx, sel = uniform_grid(k, side), None
        elif label in POSITION_AWARE:
            sel = tops_core.select(r, tops_core.spatial(sim, (side, side)), k, objective=spec)
            idx = np.asarray(sel.indices)
        else:
            sel = tops_core.select(r, sim, k, objective=spec)
            idx = np.asarray(sel.indices)
        best = min(best, time.perf_counter() - start)
    return Run(idx, best, sel)
