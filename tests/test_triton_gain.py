"""The Triton gain layer against its core twins, bit for bit (Triton's interpreter on CPU tensors).

``tops_adapters._triton_gain`` restates the core's compiled gain layer for the GPU kernels; these
checks keep every formula there equal to the one the core computes with, so a kernel's gains,
drift bounds and rule bounds round as the core's do.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")  # TRITON_INTERPRET=1 without a GPU: set in conftest.py
pytest.importorskip("numba")

import triton.language as tl  # noqa: E402
from tops_adapters import _triton_gain as gain  # noqa: E402

from tops_core import _gain_kernels, _rule_kernels  # noqa: E402
from tops_core.solvers import _greedy_kernels  # noqa: E402

N = 256  # inputs per formula
OUTPUTS = 13
DEVICE = "cpu" if not torch.cuda.is_available() else "cuda"


@triton.jit
def _evaluate(x_ptr, out_ptr, N: tl.constexpr):
    """Every formula of the layer on the columns of ``x`` (9 rows of N inputs); 13 rows out."""
    i = tl.arange(0, N)
    n = tl.load(x_ptr + i)
    updates = tl.load(x_ptr + N + i)
    x2 = tl.load(x_ptr + 2 * N + i)
    x3 = tl.load(x_ptr + 3 * N + i)
    x4 = tl.load(x_ptr + 4 * N + i)
    x5 = tl.load(x_ptr + 5 * N + i)
    x6 = tl.load(x_ptr + 6 * N + i)
    x7 = tl.load(x_ptr + 7 * N + i)
    x8 = tl.load(x_ptr + 8 * N + i)
    tl.store(out_ptr + 0 * N + i, gain.running_drift(n, updates, x2))
    tl.store(out_ptr + 1 * N + i, gain.greedy_tol(n, updates, x3, x4, x5, x6, x7, x8))
    tl.store(out_ptr + 2 * N + i, gain.step_gain(x3, x4, x5, x6, x7, x8, True))
    tl.store(out_ptr + 3 * N + i, gain.bound_gain(x3, x4, x5, x6))
    tl.store(out_ptr + 4 * N + i, gain.coverage_term(x4, x6, x5))
    tl.store(out_ptr + 5 * N + i, gain.row_drop(x4, x6, x7, x5))
    size = tl.abs(x3)  # magnitudes: |r|, |d|, c_max and eps_c are never negative
    eps_c = tl.abs(x4)
    fine, err = gain.mean_term_error(n, x2, size)
    tl.store(out_ptr + 6 * N + i, fine.to(tl.float64))
    tl.store(out_ptr + 7 * N + i, err)
    fine, err = gain.mean_coverage_error(n, x2, size, eps_c)
    tl.store(out_ptr + 8 * N + i, fine.to(tl.float64))
    tl.store(out_ptr + 9 * N + i, err)
    fine, err = gain.minmax_coverage_error(x2, eps_c)
    tl.store(out_ptr + 10 * N + i, fine.to(tl.float64))
    tl.store(out_ptr + 11 * N + i, err)
    tl.store(out_ptr + 12 * N + i, gain.rule_bound(x2, x3, x4, x5, x6, x7))


@pytest.fixture(scope="module")
def evaluated():
    rng = np.random.default_rng(0)
    x = np.empty((9, N))
    x[0] = rng.integers(1, 5000, N)  # n
    x[1] = rng.integers(0, 20000, N)  # updates
    x[2] = rng.normal(size=N) * 10.0 ** rng.integers(-15, 2, N)  # a running mean or scale, near 0 too
    x[3:] = rng.normal(size=(6, N))
    x[4, ::4] = 1e-14 * np.abs(x[4, ::4])  # an eps_c small enough for the min-max bound to hold
    out = torch.zeros((OUTPUTS, N), dtype=torch.float64, device=DEVICE)
    _evaluate[(1,)](torch.tensor(x, device=DEVICE), out, N=N)
    return x, out.cpu().numpy()


def test_the_drift_bounds_are_the_cores(evaluated):
    x, out = evaluated
    n, updates, scale, a, r_max, b, g0, c, pen_max = x
    for i in range(N):
        assert out[0, i] == _gain_kernels.running_drift(int(n[i]), updates[i], scale[i])
        assert out[1, i] == _greedy_kernels._greedy_tol(
            int(n[i]), updates[i], a[i], r_max[i], b[i], g0[i], c[i], pen_max[i]
        )
    assert gain.EPS.value == np.finfo(np.float64).eps == _gain_kernels.EPS


def test_the_gains_and_drops_are_the_cores(evaluated):
    x, out = evaluated
    _, _, _, a, r, b, cov, c, pen = x
    for i in range(N):
        assert out[2, i] == _gain_kernels.step_gain(a[i], r[i], b[i], cov[i], c[i], pen[i])
        assert out[4, i] == _gain_kernels.coverage_term(r[i], cov[i], b[i])
        assert out[5, i] == _gain_kernels._drop(r[i], cov[i], c[i], b[i])
    # the certificate's gain: the greedy kernels' a * max(r, 0) + b * cov
    np.testing.assert_array_equal(out[3], a * np.maximum(r, 0.0) + b * cov)


def test_the_rule_bounds_are_the_cores(evaluated):
    x, out = evaluated
    n, _, sc, x3, x4, x5, x6, x7, _ = x
    size, eps_c = np.abs(x3), np.abs(x4)
    settled = {"mean": 0, "coverage": 0, "minmax": 0}
    for i in range(N):
        # _mean_errors(n, alpha, lam, r_sc, d_sc, c_sc, r_abs, d_abs, c_max, eps_c): one term at a time
        safe, err_r, _, _ = _rule_kernels._mean_errors(int(n[i]), 0.0, 0.0, sc[i], 0, 0, size[i], 0, 0, 0)
        assert bool(out[6, i]) == safe
        if safe:
            assert out[7, i] == err_r
            settled["mean"] += 1
        safe, _, _, err_c = _rule_kernels._mean_errors(
            int(n[i]), 0.0, 1.0, 1.0, 0, sc[i], 0, 0, size[i], eps_c[i]
        )
        assert bool(out[8, i]) == safe
        if safe:
            assert out[9, i] == err_c
            settled["coverage"] += 1
        safe, err_c = _rule_kernels._minmax_errors(1.0, sc[i], eps_c[i])
        assert bool(out[10, i]) == safe
        if safe:
            assert out[11, i] == err_c
            settled["minmax"] += 1
        assert out[12, i] == _rule_kernels._rule_bound(sc[i], x3[i], x4[i], x5[i], x6[i], x7[i])
    assert all(0 < count < N for count in settled.values()), settled  # both sides of every condition
