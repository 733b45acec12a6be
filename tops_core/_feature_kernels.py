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
def extract_rows(block, col0, m, row_start, counts, idx_buf, val_buf):
    """Kept entries of each row of ``block`` (columns ``col0 ..``): ``block[t, q] > m[col0 + q]``.

    Row ``t`` (token ``row_start + t``) writes its kept column indices and
    values, ascending, to ``idx_buf[t]``, ``val_buf[t]`` and their count to
    ``counts[t]``.
    """
    nc = block.shape[1]
    for t in prange(block.shape[0]):
        row = block[t]
        ids = idx_buf[t]
        vals = val_buf[t]
        # Branch-free compaction: every entry is written, the count moves past kept ones only.
        c = 0
        for q in range(nc):
            v = row[q]
            j = col0 + q
            ids[c] = j
            vals[c] = v
            c += v > m[j]
        counts[t] = c


@njit(cache=True, parallel=True)
def extract_columns(block, q0, m, row_start, counts, idx_buf, val_buf):
    """Kept entries of the columns ``q >= q0`` of ``block``: ``block[t, q] > m[row_start + t]``.

    By symmetry column ``q`` holds token ``col0 + q``'s entries for the rows
    ``row_start + t``; they go, ascending, to ``idx_buf[q - q0]``,
    ``val_buf[q - q0]`` with their count in ``counts[q - q0]``. Columns are
    walked 64 at a time so the rows' cache lines are reused.
    """
    nrows, nc = block.shape
    tiles = (nc - q0 + 63) // 64
    for tile in prange(tiles):
        qa = q0 + 64 * tile
        qb = min(qa + 64, nc)
        for q in range(qa, qb):
            counts[q - q0] = 0
        for t in range(nrows):
            i = row_start + t
            mi = m[i]
            row = block[t]
            for q in range(qa, qb):
                v = row[q]
                c = counts[q - q0]
                idx_buf[q - q0, c] = i
                val_buf[q - q0, c] = v
                counts[q - q0] = c + (v > mi)


@njit(cache=True, parallel=True)
def pack(counts, first, skip, idx_buf, val_buf, idx, val, starts, lengths):
    """Copy buffered entries into exact-size arrays: token ``first + t`` gets ``starts``, ``lengths``.

    Tokens with ``skip`` set (already chosen) keep nothing.
    """
    nrows = counts.shape[0]
    offsets = np.zeros(nrows + 1, dtype=np.int64)
    for t in range(nrows):
        offsets[t + 1] = offsets[t] + (0 if skip[first + t] else counts[t])
    for t in prange(nrows):
        g = first + t
        lo = offsets[t]
        c = offsets[t + 1] - lo
        starts[g] = lo
        lengths[g] = c
        idx[lo:lo + c] = idx_buf[t, :c]
        val[lo:lo + c] = val_buf[t, :c]


@njit(cache=True)
def _accumulate(ids, vals, lo, length, m, w, lanes):
    """Add one part of a token's kept entries to its lanes; drop those now at or below ``m``.

    Returns the new length (survivors are compacted in place). Branch-free:
    early on about half the entries drop at once, and a zero term adds
    ``+0.0``, which leaves a lane unchanged.
    """
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
    return keep


@njit(cache=True)
def _gain(store, token, block_rows, m, w, lanes):
    """Canonical coverage gain of ``token`` from its parts, in ascending column order."""
    seg_idx, seg_val, seg_start, seg_len, own_idx, own_val, own_start, own_len = store
    for q in range(8):
        lanes[q] = 0.0
    blk = token // block_rows
    for b in range(blk):  # columns of the earlier row blocks
        if seg_len[token, b] > 0:
            seg_len[token, b] = _accumulate(seg_idx[b], seg_val[b], seg_start[token, b], seg_len[token, b],
                                            m, w, lanes)
    own_len[token] = _accumulate(own_idx[blk], own_val[blk], own_start[token], own_len[token], m, w, lanes)
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


@njit(cache=True, parallel=True)
def _sweep(store, block_rows, tokens, m, w, cov):
    """Canonical gains of all ``tokens`` at once, in parallel (each prunes only its own entries)."""
    for t in prange(tokens.shape[0]):
        lanes = np.zeros(8)
        cov[t] = _gain(store, tokens[t], block_rows, m, w, lanes)


@njit(cache=True)
def _raise(ids, vals, lo, length, m):
    for e in range(lo, lo + length):
        j = ids[e]
        if vals[e] > m[j]:
            m[j] = vals[e]


@njit(cache=True)
def _add(store, token, block_rows, m):
    """Raise the running max by a pick's kept entries (those left out are at or below it)."""
    seg_idx, seg_val, seg_start, seg_len, own_idx, own_val, own_start, own_len = store
    blk = token // block_rows
    for b in range(blk):
        _raise(seg_idx[b], seg_val[b], seg_start[token, b], seg_len[token, b], m)
        seg_len[token, b] = 0
    _raise(own_idx[blk], own_val[blk], own_start[token], own_len[token], m)
    own_len[token] = 0


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
def lazy_steps(store, block_rows, m, w, r, r_pos, a, b, c, penalty,
               f_bound, g_bound, fresh_at, heap, size, step, stop, last, order, f_gains, g_gains):
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
    size, upper_gain, evaluations, last
        Heap size after the picks, sum of the picks' ``g`` gains, number of
        gains evaluated, and how many the last step evaluated (``last`` in:
        the previous step's; when it exceeds half the candidates, a step
        starts by evaluating them all in parallel).
    """
    lanes = np.zeros(8)
    upper_gain = 0.0
    evaluations = 0
    cov_all = np.empty(size)
    old = np.empty(size)
    for s in range(step, stop):
        swept = 2 * last > size
        if swept:
            # Most gains were stale last step, as they are early on: evaluate them
            # all in parallel (the heap then settles the step without more work).
            _sweep(store, block_rows, heap[:size], m, w, cov_all)
            for q in range(size):
                i = heap[q]
                old[q] = f_bound[i]
                f = a * r[i] + b * cov_all[q]
                if c != 0.0:
                    f = f - c * penalty[i]
                f_bound[i] = f
                g_bound[i] = a * r_pos[i] + b * cov_all[q]
                fresh_at[i] = s
            heapify(heap[:size], f_bound)
            evaluations += size
        last = 0
        while True:
            top = heap[0]
            if fresh_at[top] == s:
                break
            cov = _gain(store, top, block_rows, m, w, lanes)
            evaluations += 1
            f = a * r[top] + b * cov
            if c != 0.0:
                f = f - c * penalty[top]
            f_bound[top] = f
            g_bound[top] = a * r_pos[top] + b * cov
            fresh_at[top] = s
            last += 1
            _sift_down(heap, size, 0, f_bound)
        if swept:  # how many the lazy step would have evaluated
            for q in range(size):
                last += old[q] >= f_bound[top]
        size -= 1
        heap[0] = heap[size]
        _sift_down(heap, size, 0, f_bound)
        order[s] = top
        f_gains[s] = f_bound[top]
        g_gains[s] = g_bound[top]
        upper_gain += g_bound[top]
        _add(store, top, block_rows, m)
    return size, upper_gain, evaluations, last
