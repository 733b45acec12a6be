"""Numba kernels of features mode's sparse phase (imported lazily, only with Numba).

After one full pass over the similarity at running max ``m0``, token ``i`` keeps
only the entries ``(j, s[j, i])`` with ``s[j, i] > m0_j``, ascending in ``j``.
The running max only grows, so every entry left out has a zero term
``max(s[j, i] - m_j, 0)`` from then on, and adding ``+0.0`` to a lane leaves it
unchanged: reducing the kept entries into lane ``j % 8`` in ascending ``j``
gives the canonical gain of :func:`tops_core.objective.lane_sum` bit for bit.
``fastmath`` stays off (it would reorder the sums).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def extract_block(rows, m, w, skip, row_start, counts, idx_buf, val_buf, cov):
    """Entries above ``m`` of a block of rows (= columns), and their canonical gains.

    Row ``t`` writes its kept column indices and values to ``idx_buf[t]``,
    ``val_buf[t]`` (ascending), their count to ``counts[row_start + t]`` and
    its canonical coverage gain to ``cov[row_start + t]``. Rows with
    ``skip[row_start + t]`` (tokens already chosen) keep nothing.
    """
    n = rows.shape[1]
    n8 = n - n % 8
    for t in prange(rows.shape[0]):
        i = row_start + t
        if skip[i]:
            counts[i] = 0
            cov[i] = 0.0
            continue
        row = rows[t]
        ids = idx_buf[t]
        vals = val_buf[t]
        # Branch-free compaction: every entry is written, the count moves past kept ones only.
        c = 0
        for j in range(n):
            v = row[j]
            ids[c] = j
            vals[c] = v
            c += v > m[j]
        counts[i] = c
        # The canonical sum over the whole row (zero terms add +0.0), as lane_gain does it.
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        for j in range(0, n8, 8):
            d0 = row[j] - m[j]
            d1 = row[j + 1] - m[j + 1]
            d2 = row[j + 2] - m[j + 2]
            d3 = row[j + 3] - m[j + 3]
            d4 = row[j + 4] - m[j + 4]
            d5 = row[j + 5] - m[j + 5]
            d6 = row[j + 6] - m[j + 6]
            d7 = row[j + 7] - m[j + 7]
            a0 += (d0 if d0 > 0.0 else 0.0) * w[j]
            a1 += (d1 if d1 > 0.0 else 0.0) * w[j + 1]
            a2 += (d2 if d2 > 0.0 else 0.0) * w[j + 2]
            a3 += (d3 if d3 > 0.0 else 0.0) * w[j + 3]
            a4 += (d4 if d4 > 0.0 else 0.0) * w[j + 4]
            a5 += (d5 if d5 > 0.0 else 0.0) * w[j + 5]
            a6 += (d6 if d6 > 0.0 else 0.0) * w[j + 6]
            a7 += (d7 if d7 > 0.0 else 0.0) * w[j + 7]
        lanes = np.zeros(8)
        for j in range(n8, n):
            d = row[j] - m[j]
            lanes[j - n8] = (d if d > 0.0 else 0.0) * w[j]
        cov[i] = (((a0 + lanes[0]) + (a1 + lanes[1])) + ((a2 + lanes[2]) + (a3 + lanes[3]))) + (
            ((a4 + lanes[4]) + (a5 + lanes[5])) + ((a6 + lanes[6]) + (a7 + lanes[7])))


@njit(cache=True)
def pack_block(counts, row_start, idx_buf, val_buf, idx, val, starts):
    """Copy a block's kept entries into exact-size arrays; ``starts`` gets each row's offset."""
    pos = 0
    for t in range(idx_buf.shape[0]):
        i = row_start + t
        starts[i] = pos
        c = counts[i]
        idx[pos:pos + c] = idx_buf[t, :c]
        val[pos:pos + c] = val_buf[t, :c]
        pos += c


@njit(cache=True)
def _gain(ids, vals, lo, length, m, w, lanes):
    """Canonical coverage gain of one token from its kept entries; drops those now at or below ``m``.

    Returns the gain and the new length (the survivors are compacted in place).
    """
    for q in range(8):
        lanes[q] = 0.0
    # Branch-free (about half the entries drop at once early on): a zero term adds
    # +0.0, which leaves a lane unchanged, and every entry is rewritten in place.
    keep = 0
    for e in range(lo, lo + length):
        j = ids[e]
        v = vals[e]
        d = v - m[j]
        pos = d > 0.0
        lanes[j & 7] += (d if pos else 0.0) * w[j]
        ids[lo + keep] = j
        vals[lo + keep] = v
        keep += pos
    cov = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    return cov, keep


@njit(cache=True)
def _better(f, a, b):
    """Heap order: larger bound first, lower index first on ties (greedy's tie rule)."""
    return f[a] > f[b] or (f[a] == f[b] and a < b)


@njit(cache=True)
def _sift_down(heap, size, pos, f):
    item = heap[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _better(f, heap[child + 1], heap[child]):
            child += 1
        if not _better(f, heap[child], item):
            break
        heap[pos] = heap[child]
        pos = child
    heap[pos] = item


@njit(cache=True)
def heapify(heap, f):
    """Arrange ``heap`` (token ids) as a max-heap of the bounds ``f`` (ties: lower id on top)."""
    size = heap.shape[0]
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(heap, size, pos, f)


@njit(cache=True)
def lazy_steps(idx_blocks, val_blocks, block_rows, starts, lengths, m, w, r, r_pos, a, b, c, penalty,
               f_bound, g_bound, fresh_at, heap, size, step, stop, order, f_gains, g_gains):
    """Lazy greedy steps ``step .. stop - 1`` on the kept entries (exact, greedy's order).

    ``f_bound`` holds upper bounds of every candidate's gain (canonical gains
    only shrink as ``m`` grows and the penalty only grows, bit for bit, so a
    stale gain bounds the fresh one); ``fresh_at[i] == step`` marks a gain
    computed at this step. The top of the heap is re-evaluated until it is
    fresh: then no other candidate can beat it, and the heap order settles
    ties by the lower index. The pick's kept entries raise ``m``; the caller
    adds its full row to ``penalty`` when ``c > 0``.

    Returns
    -------
    size, upper_gain, evaluations
        Heap size after the picks, sum of the picks' ``g`` gains, number of
        gains evaluated.
    """
    lanes = np.zeros(8)
    upper_gain = 0.0
    evaluations = 0
    for s in range(step, stop):
        while True:
            top = heap[0]
            if fresh_at[top] == s:
                break
            blk = top // block_rows
            cov, keep = _gain(idx_blocks[blk], val_blocks[blk], starts[top], lengths[top], m, w, lanes)
            lengths[top] = keep
            evaluations += 1
            f = a * r[top] + b * cov
            if c != 0.0:
                f = f - c * penalty[top]
            f_bound[top] = f
            g_bound[top] = a * r_pos[top] + b * cov
            fresh_at[top] = s
            _sift_down(heap, size, 0, f_bound)
        size -= 1
        heap[0] = heap[size]
        _sift_down(heap, size, 0, f_bound)
        order[s] = top
        f_gains[s] = f_bound[top]
        g_gains[s] = g_bound[top]
        upper_gain += g_bound[top]
        # Entries left out of the pick's list are at or below m already.
        blk = top // block_rows
        ids = idx_blocks[blk]
        vals = val_blocks[blk]
        lo = starts[top]
        for e in range(lo, lo + lengths[top]):
            j = ids[e]
            v = vals[e]
            if v > m[j]:
                m[j] = v
        lengths[top] = 0
    return size, upper_gain, evaluations
