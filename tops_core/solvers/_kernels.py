"""Numba kernels of the fast exact greedy (imported lazily, only when Numba is installed).

Every gain these kernels report is reduced exactly as
:func:`tops_core.objective.lane_sum` reduces it (8 interleaved running sums in
ascending index order, then a fixed tree), so they agree with the NumPy path
bit for bit. Kernels are compiled once and cached on disk (``cache=True``);
``fastmath`` stays off because it would let LLVM reorder the sums.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_EPS = float(np.finfo(np.float64).eps)


@njit(cache=True)
def _combine(a0, a1, a2, a3, a4, a5, a6, a7):
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True)
def lane_gain(col, m, w):
    """Canonical coverage gain ``sum_j w_j max(col_j - m_j, 0)`` of one candidate."""
    n = col.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, n8, 8):
        d0 = col[j] - m[j]
        d1 = col[j + 1] - m[j + 1]
        d2 = col[j + 2] - m[j + 2]
        d3 = col[j + 3] - m[j + 3]
        d4 = col[j + 4] - m[j + 4]
        d5 = col[j + 5] - m[j + 5]
        d6 = col[j + 6] - m[j + 6]
        d7 = col[j + 7] - m[j + 7]
        a0 += (d0 if d0 > 0.0 else 0.0) * w[j]
        a1 += (d1 if d1 > 0.0 else 0.0) * w[j + 1]
        a2 += (d2 if d2 > 0.0 else 0.0) * w[j + 2]
        a3 += (d3 if d3 > 0.0 else 0.0) * w[j + 3]
        a4 += (d4 if d4 > 0.0 else 0.0) * w[j + 4]
        a5 += (d5 if d5 > 0.0 else 0.0) * w[j + 5]
        a6 += (d6 if d6 > 0.0 else 0.0) * w[j + 6]
        a7 += (d7 if d7 > 0.0 else 0.0) * w[j + 7]
    rest = np.zeros(8)
    for j in range(n8, n):
        d = col[j] - m[j]
        rest[j - n8] = (d if d > 0.0 else 0.0) * w[j]
    return _combine(a0 + rest[0], a1 + rest[1], a2 + rest[2], a3 + rest[3],
                    a4 + rest[4], a5 + rest[5], a6 + rest[6], a7 + rest[7])


@njit(cache=True)
def _term(s, mj, wj):
    """One canonical coverage term ``w_j max(s - m_j, 0)``."""
    d = s - mj
    return (d if d > 0.0 else 0.0) * wj


@njit(cache=True)
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
                acc += _term(ra[i], ma, wa)
                acc += _term(rb[i], mb, wb)
                acc += _term(rc[i], mc, wc)
                acc += _term(rd[i], md, wd)
                lane[i] = acc
            t += 32
        while t < nrows:
            j = row_start + t
            row, mj, wj = rows[t], m[j], w[j]
            for i in range(n):
                lane[i] += _term(row[i], mj, wj)
            t += 8


@njit(cache=True)
def combine_lanes(lanes):
    """Tree-combine lane sums ``(8, N)`` into the canonical reductions ``(N,)``."""
    n = lanes.shape[1]
    out = np.empty(n)
    for i in range(n):
        out[i] = _combine(lanes[0, i], lanes[1, i], lanes[2, i], lanes[3, i],
                          lanes[4, i], lanes[5, i], lanes[6, i], lanes[7, i])
    return out


@njit(cache=True)
def _drop(s, hi, lo, wj):
    """Row ``j``'s loss of gain for a candidate with entry ``s``: ``w_j (min(s, hi) - lo)^+``.

    Branch-free (vectorises); a candidate below ``lo`` loses exactly 0.0.
    """
    x = (s if s < hi else hi) - lo
    return wj * (x if x > 0.0 else 0.0)


@njit(cache=True)
def lower_gains(rows, changed, old, m, w, n_changed, cov):
    """Apply the rows whose running max rose from ``old[t]`` to ``m[j]`` to the gains ``cov``.

    Rows go eight (then four, then one) at a time: each pass over ``cov``
    subtracts their summed terms once, so the gains, which do not fit in L1
    next to a row, are read and written an eighth as often. The rounding per
    row stays within what the drift bound of :func:`greedy_steps` counts.
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
            cov[i] -= (((_drop(r0[i], h0, l0, w0) + _drop(r1[i], h1, l1, w1))
                        + (_drop(r2[i], h2, l2, w2) + _drop(r3[i], h3, l3, w3)))
                       + ((_drop(r4[i], h4, l4, w4) + _drop(r5[i], h5, l5, w5))
                          + (_drop(r6[i], h6, l6, w6) + _drop(r7[i], h7, l7, w7))))
        t += 8
    while t + 4 <= n_changed:
        j0, j1, j2, j3 = changed[t], changed[t + 1], changed[t + 2], changed[t + 3]
        r0, r1, r2, r3 = rows[j0], rows[j1], rows[j2], rows[j3]
        l0, l1, l2, l3 = old[t], old[t + 1], old[t + 2], old[t + 3]
        h0, h1, h2, h3 = m[j0], m[j1], m[j2], m[j3]
        w0, w1, w2, w3 = w[j0], w[j1], w[j2], w[j3]
        for i in range(n):
            cov[i] -= ((_drop(r0[i], h0, l0, w0) + _drop(r1[i], h1, l1, w1))
                       + (_drop(r2[i], h2, l2, w2) + _drop(r3[i], h3, l3, w3)))
        t += 4
    while t < n_changed:
        j = changed[t]
        row, lo, hi, wj = rows[j], old[t], m[j], w[j]
        for i in range(n):
            cov[i] -= _drop(row[i], hi, lo, wj)
        t += 1


@njit(cache=True)
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
    order = np.empty(k, dtype=np.int64)
    f_gains = np.empty(k)
    g_gains = np.empty(k)
    changed = np.empty(n, dtype=np.int64)
    old = np.empty(n)
    g0 = 0.0
    for i in range(n):
        if cov[i] > g0:
            g0 = cov[i]
    r_max = 0.0
    for i in range(n):
        if abs(r[i]) > r_max:
            r_max = abs(r[i])
    updates = 0
    upper_value = 0.0
    pen_max = 0.0
    tol = 0.0
    for step in range(k):
        # Rounding drift of the running gains: the canonical sum and the
        # running one are each within (N + 4 * updates) eps * g0 of the real
        # value; the final combination adds a few more roundings.
        tol = 8.0 * _EPS * ((n + 4.0 * updates + 16.0) * b * g0
                            + a * r_max + b * g0 + c * pen_max)
        best = -np.inf
        second = -np.inf
        pick = -1
        for i in range(n):
            if chosen[i]:
                continue
            f = a * r[i] + b * cov[i]
            if c != 0.0:
                f = f - c * penalty[i]
            if f > best:
                second = best
                best = f
                pick = i
            elif f > second:
                second = f
        if not (best - second > 2.0 * tol):  # (NaN: re-decide too)
            # Contenders within the drift: decide on canonical gains.
            best_exact = -np.inf
            pick = -1
            for i in range(n):
                if chosen[i]:
                    continue
                f = a * r[i] + b * cov[i]
                if c != 0.0:
                    f = f - c * penalty[i]
                if f >= best - 2.0 * tol:
                    cov[i] = lane_gain(cols[i], m, w)
                    f = a * r[i] + b * cov[i]
                    if c != 0.0:
                        f = f - c * penalty[i]
                    if f > best_exact:
                        best_exact = f
                        pick = i
        cov_p = lane_gain(cols[pick], m, w)
        f_p = a * r[pick] + b * cov_p
        if c != 0.0:
            f_p = f_p - c * penalty[pick]
        g_p = a * r_pos[pick] + b * cov_p
        order[step] = pick
        f_gains[step] = f_p
        g_gains[step] = g_p
        upper_value += g_p
        chosen[pick] = True
        if c != 0.0:
            prow = rows[pick]
            for i in range(n):
                penalty[i] += prow[i]
                if penalty[i] > pen_max:
                    pen_max = penalty[i]
        if b == 0.0:
            continue
        # Rows whose running max rises, then their gain updates.
        col = cols[pick]
        n_changed = 0
        for j in range(n):
            if col[j] > m[j]:
                changed[n_changed] = j
                old[n_changed] = m[j]
                n_changed += 1
                m[j] = col[j]
        lower_gains(rows, changed, old, m, w, n_changed, cov)
        updates += n_changed
    tol = 8.0 * _EPS * ((n + 4.0 * updates + 16.0) * b * g0 + a * r_max + b * g0 + c * pen_max)
    return order, f_gains, g_gains, upper_value, tol, m, penalty


@njit(cache=True)
def transpose(a):
    """Blocked transpose into a new C-contiguous array (cache-friendly tiles)."""
    n0, n1 = a.shape
    out = np.empty((n1, n0), dtype=a.dtype)
    tile = 64
    for i0 in range(0, n0, tile):
        i1 = min(i0 + tile, n0)
        for j0 in range(0, n1, tile):
            j1 = min(j0 + tile, n1)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    out[j, i] = a[i, j]
    return out


@njit(cache=True)
def max_over_columns(sim, idx):
    """``best_j = max_{i in idx} sim[j, i]`` as float64 (idx non-empty)."""
    n = sim.shape[0]
    out = np.empty(n)
    for j in range(n):
        row = sim[j]
        best = row[idx[0]]
        for t in range(1, idx.shape[0]):
            v = row[idx[t]]
            if v > best:
                best = v
        out[j] = best
    return out


@njit(cache=True)
def _ordinary(x):
    """Whether ``x`` is 0 or a normal float well inside the range (relative bounds hold)."""
    return x == 0.0 or 1e-290 <= abs(x) <= 1e290


@njit(cache=True)
def _norm_from(total, lo, hi, count, minmax):
    """(shift, scale, degenerate) of the per-step normalisation from the candidates' stats."""
    if minmax:
        return lo, hi - lo, hi - lo == 0.0
    mean = total / count
    return 0.0, mean, mean == 0.0


@njit(cache=True)
def tops_rule_steps(rows, cols, r, alpha, lam, minmax, k, order, step, m, chosen, c, c_max, updates, forced):
    """Run the TOPS rule from ``step`` with incrementally maintained coverage ``c``.

    Scores use running coverage and running means, each within a proven
    rounding bound of what the NumPy transcription computes. A step whose
    leader is ahead by more than twice the bound is the transcription's pick;
    otherwise the kernel stops and returns ``(step, updates)`` so the caller
    runs that step exactly (then resumes with ``forced`` = its pick).
    """
    n = r.shape[0]
    count = 0
    for i in range(n):
        if not chosen[i]:
            count += 1
    changed = np.empty(n, dtype=np.int64)
    old = np.empty(n)
    ones = np.ones(n)
    while step < k:
        if forced >= 0:
            pick = forced
            forced = -1
        else:
            pick = -1
            if count == 1:
                for i in range(n):
                    if not chosen[i]:
                        pick = i
            else:
                eps_c = 8.0 * _EPS * (n + 4.0 * updates + 16.0) * c_max
                # One pass for every statistic of the per-step normalisation
                # (sums in index order, as before; d_i = 1 - m_i on the fly).
                r_sum = d_sum = c_sum = 0.0
                r_lo = d_lo = c_lo = np.inf
                r_hi = d_hi = c_hi = -np.inf
                r_abs = d_abs = 0.0
                if minmax:
                    for i in range(n):
                        if chosen[i]:
                            continue
                        ri = r[i]
                        di = 1.0 - m[i]
                        ci = c[i]
                        r_lo = ri if ri < r_lo else r_lo
                        r_hi = ri if ri > r_hi else r_hi
                        d_lo = di if di < d_lo else d_lo
                        d_hi = di if di > d_hi else d_hi
                        c_lo = ci if ci < c_lo else c_lo
                        c_hi = ci if ci > c_hi else c_hi
                else:
                    for i in range(n):
                        if chosen[i]:
                            continue
                        ri = r[i]
                        di = 1.0 - m[i]
                        r_sum += ri
                        d_sum += di
                        c_sum += c[i]
                        r_abs = max(r_abs, abs(ri))
                        d_abs = max(d_abs, abs(di))
                r_lo, r_sc, r_deg = _norm_from(r_sum, r_lo, r_hi, count, minmax)
                d_lo, d_sc, d_deg = _norm_from(d_sum, d_lo, d_hi, count, minmax)
                c_lo, c_sc, c_deg = _norm_from(c_sum, c_lo, c_hi, count, minmax)
                # Relative rounding bounds need normal, finite magnitudes: outside
                # them (or with NaN) the step goes to the exact transcription.
                if not (_ordinary(r_sc) and _ordinary(d_sc) and _ordinary(c_sc)
                        and _ordinary(r_abs) and _ordinary(d_abs) and _ordinary(c_max + eps_c)
                        and _ordinary(r_lo) and _ordinary(d_lo) and _ordinary(c_lo)):
                    return step, updates
                # Bounds on |running - transcription| of each normalised term
                # (written as products of ratios: no intermediate over/underflows).
                if minmax:
                    err_r = 0.0
                    err_d = 0.0
                    safe = c_sc > 4.0 * eps_c
                    err_c = (2.0 * eps_c / c_sc + ((c_sc + 2.0 * eps_c) / c_sc)
                             * (2.0 * eps_c / (c_sc - 2.0 * eps_c))) if safe else 0.0
                    if lam == 0.0:
                        safe = True
                else:
                    dm_r = 4.0 * n * _EPS * r_abs
                    dm_d = 4.0 * n * _EPS * d_abs
                    dm_c = 4.0 * n * _EPS * (c_max + eps_c) + eps_c
                    safe = (abs(r_sc) > 2.0 * dm_r or r_abs == 0.0)
                    safe = safe and (alpha == 0.0 or abs(d_sc) > 2.0 * dm_d or d_abs == 0.0)
                    safe = safe and (lam == 0.0 or abs(c_sc) > 2.0 * dm_c)
                    err_r = 0.0
                    err_d = 0.0
                    err_c = 0.0
                    if safe:
                        if r_abs > 0.0:
                            err_r = (r_abs / abs(r_sc)) * (dm_r / (abs(r_sc) - dm_r))
                        if alpha != 0.0 and d_abs > 0.0:
                            err_d = (d_abs / abs(d_sc)) * (dm_d / (abs(d_sc) - dm_d))
                        if lam != 0.0:
                            err_c = eps_c / abs(c_sc) + ((c_max + eps_c) / abs(c_sc)) * (
                                dm_c / (abs(c_sc) - dm_c))
                if not safe:
                    return step, updates
                best = -np.inf
                second = -np.inf
                top = 0.0
                # Reciprocals instead of three divisions per candidate: each term
                # then carries up to 2 more roundings, covered with the others by
                # the 16 eps * (sum of |terms| + 1) slack below.
                inv_r = 0.0 if r_deg else 1.0 / r_sc
                inv_d = 0.0 if (d_deg or alpha == 0.0) else alpha / d_sc
                inv_c = 0.0 if (c_deg or lam == 0.0) else lam / c_sc
                if not (abs(inv_r) < np.inf and abs(inv_d) < np.inf and abs(inv_c) < np.inf):
                    return step, updates
                for i in range(n):
                    if chosen[i]:
                        continue
                    tr = (r[i] - r_lo) * inv_r
                    td = (1.0 - m[i] - d_lo) * inv_d
                    tc = (c[i] - c_lo) * inv_c
                    s = tr + td + tc
                    top = max(top, abs(tr) + abs(td) + abs(tc))
                    if s > best:
                        second = best
                        best = s
                        pick = i
                    elif s > second:
                        second = s
                bound = err_r + alpha * err_d + lam * err_c + 16.0 * _EPS * (top + 1.0)
                # Written so that NaN or inf anywhere sends the step to the transcription.
                if not (best - second > 2.0 * bound and bound < np.inf):
                    return step, updates
        order[step] = pick
        chosen[pick] = True
        count -= 1
        # The pick leaves the candidates: drop its column's term (at the old m).
        colp = cols[pick]
        mp = m[pick]
        for i in range(n):
            x = colp[i] - mp
            c[i] -= x if x > 0.0 else 0.0
        # Rows whose running max rises change every coverage by their column's term.
        n_changed = 0
        for j in range(n):
            hi = colp[j]
            if hi > m[j]:
                if not chosen[j]:
                    changed[n_changed] = j
                    old[n_changed] = m[j]
                    n_changed += 1
                m[j] = hi
        lower_gains(cols, changed, old, m, ones, n_changed, c)
        updates += n_changed
        step += 1
    return step, updates


@njit(cache=True)
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
        f = a * r[p] + b * cov
        if c != 0.0:
            f = f - c * penalty[p]
        f_gains[t] = f
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
