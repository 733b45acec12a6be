"""The compiled gain layer: every Numba kernel computes gains through these functions.

The canonical reduction is :func:`tops_core.objective.lane_sum`'s (8
interleaved running sums in ascending index order, then a fixed tree): the
kernels here reproduce it bit for bit, whatever the access pattern (a column
read by :func:`lane_gain`, rows streamed by :func:`add_lanes`). The gain of a
candidate from its coverage and penalty is :func:`step_gain`; the rounding
drift of gains maintained by row updates is bounded by :func:`running_drift`.
Imported only when Numba is installed (through :mod:`tops_core._numba`);
compiled once and cached on disk; ``fastmath`` stays off because it would let
LLVM reorder the sums.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: float64 machine epsilon.
EPS = float(np.finfo(np.float64).eps)


@njit(cache=True, nogil=True)
def combine8(a0, a1, a2, a3, a4, a5, a6, a7):
    """The fixed tree that ends every canonical reduction: ``((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7))``."""
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, nogil=True)
def coverage_term(s, mj, wj):
    """One canonical coverage term ``w_j max(s - m_j, 0)``."""
    d = s - mj
    return (d if d > 0.0 else 0.0) * wj


@njit(cache=True, nogil=True)
def step_gain(a, ri, b, cov, c, pen):
    """The gain ``a r_i + b cov_i - c p_i`` of a candidate (the penalty only when ``c > 0``)."""
    f = a * ri + b * cov
    if c != 0.0:
        f = f - c * pen
    return f


@njit(cache=True, nogil=True)
def running_drift(n, updates, scale):
    """Bound on the rounding drift of running sums of ``n`` terms after ``updates`` row updates.

    A canonical sum and one maintained by subtracting row terms are each within
    ``(n + 4 updates) eps scale`` of the real value (``scale`` bounds the sums);
    the constants leave room for the few roundings around them.
    """
    return 8.0 * EPS * (n + 4.0 * updates + 16.0) * scale


@njit(cache=True, nogil=True)
def lane_gain(col, m, w):
    """Canonical coverage gain ``sum_j w_j max(col_j - m_j, 0)`` of one candidate."""
    n = col.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, n8, 8):
        a0 += coverage_term(col[j], m[j], w[j])
        a1 += coverage_term(col[j + 1], m[j + 1], w[j + 1])
        a2 += coverage_term(col[j + 2], m[j + 2], w[j + 2])
        a3 += coverage_term(col[j + 3], m[j + 3], w[j + 3])
        a4 += coverage_term(col[j + 4], m[j + 4], w[j + 4])
        a5 += coverage_term(col[j + 5], m[j + 5], w[j + 5])
        a6 += coverage_term(col[j + 6], m[j + 6], w[j + 6])
        a7 += coverage_term(col[j + 7], m[j + 7], w[j + 7])
    rest = np.zeros(8)
    for j in range(n8, n):
        rest[j - n8] = coverage_term(col[j], m[j], w[j])
    return combine8(
        a0 + rest[0],
        a1 + rest[1],
        a2 + rest[2],
        a3 + rest[3],
        a4 + rest[4],
        a5 + rest[5],
        a6 + rest[6],
        a7 + rest[7],
    )


@njit(cache=True, nogil=True)
def add_lanes(rows, row_start, w, m, lanes):
    """Stream rows ``s[row_start + t, :]`` into per-candidate lane sums at running max ``m``.

    ``lanes[l, i]`` accumulates ``w_j max(s[j, i] - m_j, 0)`` for
    ``j = l (mod 8)`` in ascending ``j``: reading the matrix row by row gives,
    for every candidate, the same reduction :func:`lane_gain` gives reading
    its column. Four rows of a lane are added per load and store of the lane
    (in the same order, so the same bits): the lanes, not the rows, were the
    memory traffic.
    """
    nrows = rows.shape[0]
    n = rows.shape[1]
    for lane_no in range(8):
        lane = lanes[lane_no]
        t = (lane_no - row_start) % 8  # first row of this lane
        while t + 24 < nrows:
            ja = row_start + t
            ra, rb, rc, rd = rows[t], rows[t + 8], rows[t + 16], rows[t + 24]
            ma, mb, mc, md = m[ja], m[ja + 8], m[ja + 16], m[ja + 24]
            wa, wb, wc, wd = w[ja], w[ja + 8], w[ja + 16], w[ja + 24]
            for i in range(n):
                acc = lane[i]
                acc += coverage_term(ra[i], ma, wa)
                acc += coverage_term(rb[i], mb, wb)
                acc += coverage_term(rc[i], mc, wc)
                acc += coverage_term(rd[i], md, wd)
                lane[i] = acc
            t += 32
        while t < nrows:
            j = row_start + t
            row, mj, wj = rows[t], m[j], w[j]
            for i in range(n):
                lane[i] += coverage_term(row[i], mj, wj)
            t += 8


@njit(cache=True, nogil=True)
def combine_lanes(lanes):
    """Tree-combine lane sums ``(8, N)`` into the canonical reductions ``(N,)``."""
    n = lanes.shape[1]
    out = np.empty(n)
    for i in range(n):
        out[i] = combine8(
            lanes[0, i],
            lanes[1, i],
            lanes[2, i],
            lanes[3, i],
            lanes[4, i],
            lanes[5, i],
            lanes[6, i],
            lanes[7, i],
        )
    return out


@njit(cache=True, nogil=True)
def _drop(s, hi, lo, wj):
    """Row ``j``'s loss of gain for a candidate with entry ``s``: ``w_j (min(s, hi) - lo)^+``.

    Branch-free (vectorises); a candidate below ``lo`` loses exactly 0.0.
    """
    x = (s if s < hi else hi) - lo
    return wj * (x if x > 0.0 else 0.0)


@njit(cache=True, nogil=True)
def lower_gains(rows, changed, old, m, w, n_changed, cov):
    """Apply the rows whose running max rose from ``old[t]`` to ``m[j]`` to the gains ``cov``.

    Rows go eight (then four, then one) at a time: each pass over ``cov``
    subtracts their summed terms once, so the gains, which do not fit in L1
    next to a row, are read and written an eighth as often. The rounding per
    row stays within what :func:`running_drift` counts.
    """
    n = cov.shape[0]
    t = 0
    while t + 8 <= n_changed:
        j0, j1, j2, j3 = changed[t], changed[t + 1], changed[t + 2], changed[t + 3]
        j4, j5, j6, j7 = changed[t + 4], changed[t + 5], changed[t + 6], changed[t + 7]
        r0, r1, r2, r3 = rows[j0], rows[j1], rows[j2], rows[j3]
        r4, r5, r6, r7 = rows[j4], rows[j5], rows[j6], rows[j7]
        l0, l1, l2, l3 = old[t], old[t + 1], old[t + 2], old[t + 3]
        l4, l5, l6, l7 = old[t + 4], old[t + 5], old[t + 6], old[t + 7]
        h0, h1, h2, h3, h4, h5, h6, h7 = m[j0], m[j1], m[j2], m[j3], m[j4], m[j5], m[j6], m[j7]
        w0, w1, w2, w3, w4, w5, w6, w7 = w[j0], w[j1], w[j2], w[j3], w[j4], w[j5], w[j6], w[j7]
        for i in range(n):
            cov[i] -= (
                (_drop(r0[i], h0, l0, w0) + _drop(r1[i], h1, l1, w1))
                + (_drop(r2[i], h2, l2, w2) + _drop(r3[i], h3, l3, w3))
            ) + (
                (_drop(r4[i], h4, l4, w4) + _drop(r5[i], h5, l5, w5))
                + (_drop(r6[i], h6, l6, w6) + _drop(r7[i], h7, l7, w7))
            )
        t += 8
    while t + 4 <= n_changed:
        j0, j1, j2, j3 = changed[t], changed[t + 1], changed[t + 2], changed[t + 3]
        r0, r1, r2, r3 = rows[j0], rows[j1], rows[j2], rows[j3]
        l0, l1, l2, l3 = old[t], old[t + 1], old[t + 2], old[t + 3]
        h0, h1, h2, h3 = m[j0], m[j1], m[j2], m[j3]
        w0, w1, w2, w3 = w[j0], w[j1], w[j2], w[j3]
        for i in range(n):
            cov[i] -= (_drop(r0[i], h0, l0, w0) + _drop(r1[i], h1, l1, w1)) + (
                _drop(r2[i], h2, l2, w2) + _drop(r3[i], h3, l3, w3)
            )
        t += 4
    while t < n_changed:
        j = changed[t]
        row, lo, hi, wj = rows[j], old[t], m[j], w[j]
        for i in range(n):
            cov[i] -= _drop(row[i], hi, lo, wj)
        t += 1


@njit(cache=True, nogil=True)
def raise_max(col, m, changed, old):
    """Raise the running max ``m`` by a pick's column; record the rows that rose (and from what).

    Returns how many rows rose: ``changed[:count]`` and ``old[:count]``.
    """
    count = 0
    for j in range(m.shape[0]):
        if col[j] > m[j]:
            changed[count] = j
            old[count] = m[j]
            count += 1
            m[j] = col[j]
    return count
