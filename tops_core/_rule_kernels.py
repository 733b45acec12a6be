"""Numba kernel of the TOPS rule: running coverage and per-step normalisation within proven bounds.

The coverage updates go through the compiled gain layer
(:mod:`tops_core._gain_kernels`). Imported only when Numba is installed
(through :mod:`tops_core._numba`); :class:`tops_core.TOPSRule` runs the steps
the bounds cannot settle as the paper's transcription.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tops_core._gain_kernels import EPS, coverage_term, lower_gains, running_drift


@njit(cache=True, nogil=True)
def _ordinary(x):
    """Whether ``x`` is 0 or a normal float well inside the range (relative bounds hold)."""
    return x == 0.0 or 1e-290 <= abs(x) <= 1e290


@njit(cache=True, nogil=True)
def _norm_from(total, lo, hi, count, minmax):
    """(shift, scale, degenerate) of the per-step normalisation from the candidates' stats."""
    if minmax:
        return lo, hi - lo, hi - lo == 0.0
    mean = total / count
    return 0.0, mean, mean == 0.0


@njit(cache=True, nogil=True)
def _normalisations(r, m, c, chosen, count, minmax):
    """The per-step normalisation of relevance, diversity and coverage over the candidates.

    One pass for every statistic (sums in index order; ``d_i = 1 - m_i`` on
    the fly). Returns ``(r_lo, r_sc, r_deg, d_lo, d_sc, d_deg, c_lo, c_sc,
    c_deg, r_abs, d_abs)``: each term's shift, scale and whether it is
    degenerate (see :func:`_norm_from`), and the largest ``|r_i|``, ``|d_i|``.
    """
    r_sum = d_sum = c_sum = 0.0
    r_lo = d_lo = c_lo = np.inf
    r_hi = d_hi = c_hi = -np.inf
    r_abs = d_abs = 0.0
    for i in range(r.shape[0]):
        if chosen[i]:
            continue
        ri = r[i]
        di = 1.0 - m[i]
        ci = c[i]
        if minmax:
            r_lo = ri if ri < r_lo else r_lo
            r_hi = ri if ri > r_hi else r_hi
            d_lo = di if di < d_lo else d_lo
            d_hi = di if di > d_hi else d_hi
            c_lo = ci if ci < c_lo else c_lo
            c_hi = ci if ci > c_hi else c_hi
        else:
            r_sum += ri
            d_sum += di
            c_sum += ci
            r_abs = max(r_abs, abs(ri))
            d_abs = max(d_abs, abs(di))
    r_lo, r_sc, r_deg = _norm_from(r_sum, r_lo, r_hi, count, minmax)
    d_lo, d_sc, d_deg = _norm_from(d_sum, d_lo, d_hi, count, minmax)
    c_lo, c_sc, c_deg = _norm_from(c_sum, c_lo, c_hi, count, minmax)
    return r_lo, r_sc, r_deg, d_lo, d_sc, d_deg, c_lo, c_sc, c_deg, r_abs, d_abs


@njit(cache=True, nogil=True)
def _minmax_errors(lam, c_sc, eps_c):
    """``(safe, err_c)``: the bound on the running coverage's min-max term (the others are exact)."""
    safe = c_sc > 4.0 * eps_c
    err_c = (
        (2.0 * eps_c / c_sc + ((c_sc + 2.0 * eps_c) / c_sc) * (2.0 * eps_c / (c_sc - 2.0 * eps_c)))
        if safe
        else 0.0
    )
    return safe or lam == 0.0, err_c


@njit(cache=True, nogil=True)
def _mean_errors(n, alpha, lam, r_sc, d_sc, c_sc, r_abs, d_abs, c_max, eps_c):
    """``(safe, err_r, err_d, err_c)``: bounds on |running - transcription| of each mean-normalised term.

    Written as products of ratios: no intermediate over- or underflows.
    ``safe`` is false where a running mean may be too close to 0 to bound.
    """
    dm_r = 4.0 * n * EPS * r_abs
    dm_d = 4.0 * n * EPS * d_abs
    dm_c = 4.0 * n * EPS * (c_max + eps_c) + eps_c
    safe = abs(r_sc) > 2.0 * dm_r or r_abs == 0.0
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
            err_c = eps_c / abs(c_sc) + ((c_max + eps_c) / abs(c_sc)) * (dm_c / (abs(c_sc) - dm_c))
    return safe, err_r, err_d, err_c


@njit(cache=True, nogil=True)
def _rule_bound(err_r, alpha, err_d, lam, err_c, top):
    """Bound on |running score - transcription's score|: the terms' errors and 16 eps of the scores' size."""
    return err_r + alpha * err_d + lam * err_c + 16.0 * EPS * (top + 1.0)


@njit(cache=True, nogil=True)
def _scan(r, m, c, chosen, r_lo, d_lo, c_lo, inv_r, inv_d, inv_c):
    """``(pick, best, second, top)``: the leader of the step scores, the runner-up, max ``sum |terms|``."""
    best = -np.inf
    second = -np.inf
    top = 0.0
    pick = -1
    for i in range(r.shape[0]):
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
    return pick, best, second, top


@njit(cache=True, nogil=True)
def _settled_pick(r, m, c, chosen, count, alpha, lam, minmax, c_max, updates):
    """The step's pick when the rounding bounds settle it on running values; ``-1`` when they do not.

    Scores use running coverage and running means, each within a proven
    rounding bound of what the NumPy transcription computes; a leader ahead
    by more than twice the bound is the transcription's pick.
    """
    n = r.shape[0]
    eps_c = running_drift(n, updates, c_max)
    r_lo, r_sc, r_deg, d_lo, d_sc, d_deg, c_lo, c_sc, c_deg, r_abs, d_abs = _normalisations(
        r, m, c, chosen, count, minmax
    )
    # Relative rounding bounds need normal, finite magnitudes: outside
    # them (or with NaN) the step goes to the exact transcription.
    if not (
        _ordinary(r_sc)
        and _ordinary(d_sc)
        and _ordinary(c_sc)
        and _ordinary(r_abs)
        and _ordinary(d_abs)
        and _ordinary(c_max + eps_c)
        and _ordinary(r_lo)
        and _ordinary(d_lo)
        and _ordinary(c_lo)
    ):
        return -1
    if minmax:
        err_r = err_d = 0.0
        safe, err_c = _minmax_errors(lam, c_sc, eps_c)
    else:
        safe, err_r, err_d, err_c = _mean_errors(n, alpha, lam, r_sc, d_sc, c_sc, r_abs, d_abs, c_max, eps_c)
    if not safe:
        return -1
    # Reciprocals instead of three divisions per candidate: each term
    # then carries up to 2 more roundings, covered with the others by
    # the 16 eps * (sum of |terms| + 1) slack below.
    inv_r = 0.0 if r_deg else 1.0 / r_sc
    inv_d = 0.0 if (d_deg or alpha == 0.0) else alpha / d_sc
    inv_c = 0.0 if (c_deg or lam == 0.0) else lam / c_sc
    if not (abs(inv_r) < np.inf and abs(inv_d) < np.inf and abs(inv_c) < np.inf):
        return -1
    pick, best, second, top = _scan(r, m, c, chosen, r_lo, d_lo, c_lo, inv_r, inv_d, inv_c)
    bound = _rule_bound(err_r, alpha, err_d, lam, err_c, top)
    # Written so that NaN or inf anywhere sends the step to the transcription.
    if not (best - second > 2.0 * bound and bound < np.inf):
        return -1
    return pick


@njit(cache=True, nogil=True)
def _take(pick, cols, m, c, chosen, changed, old, ones):
    """Move ``pick`` into the set: update the running max and every candidate's coverage ``c``.

    Returns the number of rows whose running max rose (the drift bound counts them).
    """
    chosen[pick] = True
    # The pick leaves the candidates: drop its column's term (at the old m).
    colp = cols[pick]
    mp = m[pick]
    for i in range(c.shape[0]):
        c[i] -= coverage_term(colp[i], mp, 1.0)
    # Rows whose running max rises change every coverage by their column's term.
    n_changed = 0
    for j in range(m.shape[0]):
        hi = colp[j]
        if hi > m[j]:
            if not chosen[j]:
                changed[n_changed] = j
                old[n_changed] = m[j]
                n_changed += 1
            m[j] = hi
    lower_gains(cols, changed, old, m, ones, n_changed, c)
    return n_changed


@njit(cache=True, nogil=True)
def tops_rule_steps(rows, cols, r, alpha, lam, minmax, k, order, step, m, chosen, c, c_max, updates, forced):
    """Run the TOPS rule from ``step`` with incrementally maintained coverage ``c``.

    A step the rounding bounds settle (:func:`_settled_pick`) is the
    transcription's pick; otherwise the kernel stops and returns
    ``(step, updates)`` so the caller runs that step exactly (then resumes
    with ``forced`` = its pick).
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
        elif count == 1:
            pick = -1
            for i in range(n):
                if not chosen[i]:
                    pick = i
        else:
            pick = _settled_pick(r, m, c, chosen, count, alpha, lam, minmax, c_max, updates)
            if pick < 0:
                return step, updates
        order[step] = pick
        count -= 1
        updates += _take(pick, cols, m, c, chosen, changed, old, ones)
        step += 1
    return step, updates
