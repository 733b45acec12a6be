"""Exact symmetry of a similarity: NumPy's blocks against compiled tile and panel kernels, one run.

Why ``tops_core`` checks symmetry with NumPy's blocks: ``python benchmarks/symmetry_check.py``
times them beside the compiled variants measured (the 16 x 16 mirrored-tile kernel tops-prune
shipped before, direct tiles, row-wise mirrors, row panels) at N = 2880 float32, best and median
of 15 calls each, on the benchmark's own data (``benchmarks/cpu.py``'s ``problem``).
"""

import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu

from tops_core._validate import _blocks_equal_transposed


@njit
def mirrored_tile(a, tile=16):
    """Whether the square 2-D float ``a`` equals its transpose exactly (first differing tile stops).

    The same answer as :func:`numpy.array_equal` of ``a`` and ``a.T``: ``-0.0``
    equals ``0.0`` and NaN equals nothing.
    """
    n = a.shape[0]
    mirror = np.empty((tile, tile), dtype=a.dtype)
    for i0 in range(0, n, tile):
        rows = min(i0 + tile, n) - i0
        for j0 in range(i0, n, tile):
            cols = min(j0 + tile, n) - j0
            for j in range(cols):  # mirror[i, j] = a[j0 + j, i0 + i]
                for i in range(rows):
                    mirror[i, j] = a[j0 + j, i0 + i]
            differ = 0
            for i in range(rows):
                for j in range(cols):
                    differ += a[i0 + i, j0 + j] != mirror[i, j]
            if differ:
                return False
    return True


@njit
def direct(a, tile=32):
    n = a.shape[0]
    for i0 in range(0, n, tile):
        i1 = min(i0 + tile, n)
        for j0 in range(i0, n, tile):
            j1 = min(j0 + tile, n)
            differ = False
            for i in range(i0, i1):
                for j in range(j0, j1):
                    differ |= a[i, j] != a[j, i]
            if differ:
                return False
    return True


@njit
def mirror_rowwise(a, tile=16):
    n = a.shape[0]
    mirror = np.empty((tile, tile), dtype=a.dtype)
    for i0 in range(0, n, tile):
        rows = min(i0 + tile, n) - i0
        for j0 in range(i0, n, tile):
            cols = min(j0 + tile, n) - j0
            for i in range(rows):
                for j in range(cols):
                    mirror[i, j] = a[j0 + j, i0 + i]
            differ = False
            for i in range(rows):
                row = a[i0 + i]
                for j in range(cols):
                    differ |= row[j0 + j] != mirror[i, j]
            if differ:
                return False
    return True


@njit
def panel(a, tile=8):
    """Row panels of ``tile`` rows: for each ``j``, ``a[j, i0:i0+tile]`` against ``a[i0:i0+tile, j]``."""
    n = a.shape[0]
    for i0 in range(0, n, tile):
        rows = min(i0 + tile, n) - i0
        differ = False
        for j in range(i0, n):
            src = a[j]
            for i in range(rows):
                differ |= src[i0 + i] != a[i0 + i, j]
        if differ:
            return False
    return True


def main() -> int:
    _, sim = cpu.problem(2880)
    fns = {
        "numpy blocks (tops_core)": _blocks_equal_transposed,
        "mirrored tile 16 (shipped before)": mirrored_tile,
        "direct 32": direct,
        "direct 64": lambda a: direct(a, 64),
        "row-wise mirror 16": mirror_rowwise,
        "row-wise mirror 32": lambda a: mirror_rowwise(a, 32),
        "panel 8": panel,
        "panel 16": lambda a: panel(a, 16),
    }
    bad = sim.copy()
    bad[2000, 2500] += 1
    for name, f in fns.items():
        assert f(sim) and not f(bad), name  # also compiles
    print(f"N = 2880 float32, {sys.platform}; ms over 15 calls")
    for name, f in fns.items():
        ts = []
        for _ in range(15):
            t = time.perf_counter()
            f(sim)
            ts.append(time.perf_counter() - t)
        print(f"{name:34s} min {min(ts) * 1e3:6.2f}  median {np.median(ts) * 1e3:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
