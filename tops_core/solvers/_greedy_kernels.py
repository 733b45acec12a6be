"""Numba kernels of the incremental exact greedy and of the gains along a given order.

Gains come from the compiled gain layer (:mod:`tops_core._gain_kernels`), so
they are :func:`tops_core.objective.lane_sum`'s bit for bit. Imported only when
Numba is installed (through :mod:`tops_core._numba`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tops_core._gain_kernels import EPS, lane_gain, lower_gains, raise_max, running_drift, step_gain


@njit(cache=True, nogil=True)
def _greedy_tol(n, updates, a, r_max, b, g0, c, pen_max):
    """Drift bound of the running gains: the running coverage plus the final combination's roundings."""
    return running_drift(n, updates, b * g0) + 8.0 * EPS * (a * r_max + b * g0 + c * pen_max)


@njit(cache=True, nogil=True)
def _lead(r, cov, offset, a, b):
    """``(pick, best, second)``: the first index of the largest running gain and the runner-up.

    ``offset[i]`` is ``-c p_i`` for candidates and ``-inf`` for chosen tokens,
    so a gain is ``a r_i + b cov_i + offset_i`` (the same bits as
    :func:`~tops_core._gain_kernels.step_gain`: ``x - y`` is ``x + (-y)``)
    and the scan has no branch. Eight lanes (``i % 8``) each keep their own
    leader and runner-up; combined, the leader is the lowest index among the
    lanes' equal maxima, as a sequential scan finds it.
    """
    n = r.shape[0]
    best = np.full(8, -np.inf)
    second = np.full(8, -np.inf)
    where = np.full(8, -1, dtype=np.int64)
    for i in range(n):
        lane = i & 7
        f = (a * r[i] + b * cov[i]) + offset[i]
        if f > best[lane]:
            second[lane] = best[lane]
            best[lane] = f
            where[lane] = i
        elif f > second[lane]:
            second[lane] = f
    top = 0
    for lane in range(1, 8):
        if best[lane] > best[top] or (
            best[lane] == best[top] and where[top] >= 0 and 0 <= where[lane] < where[top]
        ):
            top = lane
    runner = second[top]
    for lane in range(8):
        if lane != top and best[lane] > runner:
            runner = best[lane]
    return where[top], best[top], runner


@njit(cache=True, nogil=True)
def _redecide(cols, r, w, m, cov, penalty, chosen, a, b, c, floor):
    """The pick among contenders within the drift (running gain ``>= floor``), on canonical gains.

    Their running coverage gains are replaced by the canonical ones; the
    largest gain wins, lowest index first.
    """
    best_exact = -np.inf
    pick = -1
    for i in range(r.shape[0]):
        if chosen[i] or not step_gain(a, r[i], b, cov[i], c, penalty[i]) >= floor:
            continue
        cov[i] = lane_gain(cols[i], m, w)
        f = step_gain(a, r[i], b, cov[i], c, penalty[i])
        if f > best_exact:
            best_exact = f
            pick = i
    return pick


@njit(cache=True, nogil=True)
def greedy_steps(rows, cols, r, r_pos, w, a, b, c, k, cov):
    """Exact greedy with incrementally maintained gains and verified picks.

    ``rows[j]`` is row ``j`` of ``s`` and ``cols[i]`` its column ``i`` (the
    same array when ``s`` is symmetric). ``cov`` holds the canonical coverage
    gains at ``S = {}`` and is updated in place: when token ``p`` joins,
    ``m_j`` rises only where ``s[j, p] > m_j``, and each such row changes every
    candidate's gain by its own row-``j`` term, an ``O(N)`` update. These
    running gains drift from the canonical ones by rounding, at most ``tol``
    (a proven bound that grows with the number of updates). A step whose best
    running gain leads every other by more than ``2 tol`` has the same argmax
    as greedy; otherwise the contenders are recomputed canonically and the
    largest wins, lowest index first. The pick's own gain is always the
    canonical one, so order and gains equal :class:`~tops_core.Greedy`'s.

    Returns
    -------
    order, f_gains, g_gains, upper_value, tol, m, penalty
        ``cov`` ends as the running coverage gains (within ``tol``) at the
        final set, ``m`` as the final running max (exact: a max never rounds).
    """
    n = r.shape[0]
    m = np.zeros(n)
    penalty = np.zeros(n)
    chosen = np.zeros(n, dtype=np.bool_)
    offset = np.zeros(n)  # -c p_i for candidates, -inf once chosen
    order = np.empty(k, dtype=np.int64)
    f_gains = np.empty(k)
    g_gains = np.empty(k)
    changed = np.empty(n, dtype=np.int64)
    old = np.empty(n)
    g0 = 0.0
    r_max = 0.0
    for i in range(n):
        if cov[i] > g0:
            g0 = cov[i]
        if abs(r[i]) > r_max:
            r_max = abs(r[i])
    updates = 0
    upper_value = 0.0
    pen_max = 0.0
    for step in range(k):
        tol = _greedy_tol(n, updates, a, r_max, b, g0, c, pen_max)
        pick, best, second = _lead(r, cov, offset, a, b)
        if not (best - second > 2.0 * tol):  # (NaN: re-decide too)
            pick = _redecide(cols, r, w, m, cov, penalty, chosen, a, b, c, best - 2.0 * tol)
        cov_p = lane_gain(cols[pick], m, w)
        g_p = a * r_pos[pick] + b * cov_p
        order[step] = pick
        f_gains[step] = step_gain(a, r[pick], b, cov_p, c, penalty[pick])
        g_gains[step] = g_p
        upper_value += g_p
        chosen[pick] = True
        offset[pick] = -np.inf
        if c != 0.0:
            prow = rows[pick]
            for i in range(n):
                penalty[i] += prow[i]
                if penalty[i] > pen_max:
                    pen_max = penalty[i]
                if not chosen[i]:
                    offset[i] = -(c * penalty[i])
        if b == 0.0:
            continue
        # Rows whose running max rises, then their gain updates.
        n_changed = raise_max(cols[pick], m, changed, old)
        lower_gains(rows, changed, old, m, w, n_changed, cov)
        updates += n_changed
    tol = _greedy_tol(n, updates, a, r_max, b, g0, c, pen_max)
    return order, f_gains, g_gains, upper_value, tol, m, penalty


@njit(cache=True, nogil=True)
def gains_along(rows, cols, r, r_pos, w, a, b, c, order):
    """Canonical gains of ``f`` and ``g`` along a given order, and the final ``m``, penalty."""
    n = r.shape[0]
    m = np.zeros(n)
    penalty = np.zeros(n)
    f_gains = np.empty(order.shape[0])
    g_gains = np.empty(order.shape[0])
    for t in range(order.shape[0]):
        p = order[t]
        cov = lane_gain(cols[p], m, w) if b != 0.0 else 0.0
        f_gains[t] = step_gain(a, r[p], b, cov, c, penalty[p])
        g_gains[t] = a * r_pos[p] + b * cov
        if b != 0.0:
            col = cols[p]
            for j in range(n):
                if col[j] > m[j]:
                    m[j] = col[j]
        if c != 0.0:
            row = rows[p]
            for i in range(n):
                penalty[i] += row[i]
    return f_gains, g_gains, m, penalty
