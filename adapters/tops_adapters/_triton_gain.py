"""The Triton gain layer: the Triton kernels compute gains, drops and rounding bounds only here.

Triton cannot call Numba, so these restate the core's compiled gain layer
(:mod:`tops_core._gain_kernels`, the greedy's drift bound in
:mod:`tops_core.solvers._greedy_kernels`, the TOPS rule's error bounds in
:mod:`tops_core._rule_kernels`) operation for operation, in the same order:
a GPU answer then rounds as the core's does. ``tests/test_triton_gain.py``
checks every function here against its core twin, bit for bit, so the two
layers cannot drift apart. Imported by :mod:`tops_adapters._triton_kernels`.
"""

import triton
import triton.language as tl

__all__ = [
    "EPS",
    "running_drift",
    "greedy_tol",
    "step_gain",
    "bound_gain",
    "coverage_term",
    "row_drop",
    "mean_term_error",
    "mean_coverage_error",
    "minmax_coverage_error",
    "rule_bound",
]

#: float64 machine epsilon (``tops_core._gain_kernels.EPS``). Its multiples are powers of two, so
#: scaling by them is exact: they are applied last, to the right of the tensors (a constant on the
#: left of a tensor is not a tensor under the interpreter), with the core's roundings.
EPS = tl.constexpr(2.220446049250313e-16)


@triton.jit
def running_drift(n, updates, scale):
    """``tops_core._gain_kernels.running_drift``: the drift of running sums after ``updates`` row updates."""
    return (n + 4.0 * updates + 16.0) * scale * (8.0 * EPS)


@triton.jit
def greedy_tol(n, updates, a, r_max, b, g0, c, pen_max):
    """The greedy's drift bound of its running gains (``_greedy_kernels._greedy_tol``)."""
    return running_drift(n, updates, b * g0) + (a * r_max + b * g0 + c * pen_max) * (8.0 * EPS)


@triton.jit
def step_gain(a, r, b, cov, c, pen, HAS_PEN: tl.constexpr):
    """The gain ``a r_i + b cov_i - c p_i`` (``_gain_kernels.step_gain``; the penalty where ``HAS_PEN``)."""
    f = a * r + b * cov
    if HAS_PEN:
        f = f - c * pen
    return f


@triton.jit
def bound_gain(a, r, b, cov):
    """The certificate's gain ``a r_i^+ + b cov_i`` (the penalty dropped, ``r`` clipped at 0)."""
    return a * tl.maximum(r, 0.0) + b * cov


@triton.jit
def coverage_term(s, m, w):
    """One coverage term ``w_j max(s - m_j, 0)`` (``_gain_kernels.coverage_term``)."""
    return tl.maximum(s - m, 0.0) * w


@triton.jit
def row_drop(s, hi, lo, w):
    """Row ``j``'s loss of gain ``w_j (min(s, hi) - lo)^+`` (``_gain_kernels._drop``)."""
    return w * tl.maximum(tl.minimum(s, hi) - lo, 0.0)


@triton.jit
def mean_term_error(n, sc, size):
    """``(fine, err)`` of a mean-normalised relevance or diversity term (``_rule_kernels._mean_errors``).

    ``fine`` is false where the running mean ``sc`` may be too close to 0 to bound.
    """
    dm = 4.0 * n * size * EPS
    ok = (tl.abs(sc) > 2.0 * dm) & (size > 0.0)
    safe = tl.where(ok, tl.abs(sc), 1.0)
    return ok | (size == 0.0), tl.where(ok, (size / safe) * (dm / (safe - dm)), 0.0)


@triton.jit
def mean_coverage_error(n, c_sc, c_max, eps_c):
    """``(fine, err)`` of the mean-normalised running coverage term (``_rule_kernels._mean_errors``)."""
    dm = 4.0 * n * (c_max + eps_c) * EPS + eps_c
    ok = tl.abs(c_sc) > 2.0 * dm
    safe = tl.where(ok, tl.abs(c_sc), 1.0)
    return ok, eps_c / safe + ((c_max + eps_c) / safe) * (dm / (safe - dm))


@triton.jit
def minmax_coverage_error(c_sc, eps_c):
    """``(fine, err)`` of the min-max-normalised running coverage term (``_rule_kernels._minmax_errors``)."""
    ok = c_sc > 4.0 * eps_c
    safe = tl.where(ok, c_sc, 1.0)
    return ok, 2.0 * eps_c / safe + ((safe + 2.0 * eps_c) / safe) * (2.0 * eps_c / (safe - 2.0 * eps_c))


@triton.jit
def rule_bound(err_r, alpha, err_d, lam, err_c, top):
    """The TOPS rule's bound on |running score - transcription's score| (``_rule_kernels._settled_pick``)."""
    return err_r + alpha * err_d + lam * err_c + (top + 1.0) * (16.0 * EPS)
