"""Numba kernels of features mode after its one pass over the similarity.

The pass keeps the upper half of the similarity as row blocks ("tiles"):
tile ``b`` holds rows ``b * block ..`` and the columns from ``b * block`` on.
Token ``c``'s column (= its row) is then column ``c`` of the earlier tiles
(rows ``j`` below its block) followed by its own row of its tile.

Gains are the canonical reductions of :func:`tops_core.objective.lane_sum`
bit for bit: lane ``j % 8`` accumulates ``w_j max(s[j, c] - m_j, 0)`` in
ascending ``j``. Once most gains no longer need evaluating every step, each
token keeps only its entries above the running max ``m0`` (ascending ``j``):
the running max only grows, so every entry left out has a zero term from then
on, and adding ``+0.0`` to a lane leaves it unchanged. ``fastmath`` stays off
(it would reorder the sums).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tops_core._gain_kernels import combine8, step_gain


@njit(cache=True, parallel=True)
def dense_sweep(tiles, block, n, m, w, cov, counts):
    """Canonical coverage gains of all tokens from the tiles, in parallel over token blocks.

    ``counts[c]`` gets the number of entries of token ``c`` above ``m``.
    """
    nb = len(tiles)
    for cb in prange(nb):
        c0 = cb * block
        nc = min(c0 + block, n) - c0
        lanes = np.zeros((8, nc))
        kept = np.zeros(nc, dtype=np.int32)
        for ib in range(nb):
            i0 = ib * block
            i1 = min(i0 + block, n)
            if ib <= cb:  # rows j of tile ib, columns c: streamed row by row (vectorised)
                g = tiles[ib]
                off = c0 - i0
                for j in range(i0, i1):
                    row = g[j - i0][off : off + nc]
                    mj = m[j]
                    wj = w[j]
                    lane = lanes[j & 7]
                    for q in range(nc):
                        # max(d, 0) adds the same as the canonical "d if d > 0 else 0".
                        d = max(np.float64(row[q]) - mj, 0.0)
                        lane[q] += d * wj
                        kept[q] += np.int32(d > 0.0)
            else:  # the tokens' own rows, columns j of block ib
                g = tiles[np.int64(cb)]
                off = i0 - c0
                j8 = i0 + (i1 - i0) // 8 * 8 if i0 % 8 == 0 else i0
                for q in range(nc):
                    row = g[q][off : off + i1 - i0]
                    mi = m[i0:i1]
                    wi = w[i0:i1]
                    a0, a1, a2, a3 = lanes[0, q], lanes[1, q], lanes[2, q], lanes[3, q]
                    a4, a5, a6, a7 = lanes[4, q], lanes[5, q], lanes[6, q], lanes[7, q]
                    c = 0
                    for t in range(0, j8 - i0, 8):  # lane of i0 + t + u is u (i0 % 8 == 0)
                        d0 = max(np.float64(row[t]) - mi[t], 0.0)
                        d1 = max(np.float64(row[t + 1]) - mi[t + 1], 0.0)
                        d2 = max(np.float64(row[t + 2]) - mi[t + 2], 0.0)
                        d3 = max(np.float64(row[t + 3]) - mi[t + 3], 0.0)
                        d4 = max(np.float64(row[t + 4]) - mi[t + 4], 0.0)
                        d5 = max(np.float64(row[t + 5]) - mi[t + 5], 0.0)
                        d6 = max(np.float64(row[t + 6]) - mi[t + 6], 0.0)
                        d7 = max(np.float64(row[t + 7]) - mi[t + 7], 0.0)
                        a0 += d0 * wi[t]
                        a1 += d1 * wi[t + 1]
                        a2 += d2 * wi[t + 2]
                        a3 += d3 * wi[t + 3]
                        a4 += d4 * wi[t + 4]
                        a5 += d5 * wi[t + 5]
                        a6 += d6 * wi[t + 6]
                        a7 += d7 * wi[t + 7]
                        c += (
                            (d0 > 0.0)
                            + (d1 > 0.0)
                            + (d2 > 0.0)
                            + (d3 > 0.0)
                            + (d4 > 0.0)
                            + (d5 > 0.0)
                            + (d6 > 0.0)
                            + (d7 > 0.0)
                        )
                    lanes[0, q], lanes[1, q], lanes[2, q], lanes[3, q] = a0, a1, a2, a3
                    lanes[4, q], lanes[5, q], lanes[6, q], lanes[7, q] = a4, a5, a6, a7
                    for j in range(j8, i1):
                        d = max(np.float64(row[j - i0]) - m[j], 0.0)
                        lanes[j & 7, q] += d * w[j]
                        c += d > 0.0
                    kept[q] += c
        for q in range(nc):
            cov[c0 + q] = ((lanes[0, q] + lanes[1, q]) + (lanes[2, q] + lanes[3, q])) + (
                (lanes[4, q] + lanes[5, q]) + (lanes[6, q] + lanes[7, q])
            )
            counts[c0 + q] = kept[q]


@njit(cache=True, nogil=True)
def dense_row(tiles, block, n, p, out):
    """Row (= column) ``p`` of the similarity, from the tiles."""
    pb = p // block
    for ib in range(pb):
        g = tiles[ib]
        i0 = ib * block
        for j in range(i0, min(i0 + block, n)):
            out[j] = g[j - i0, p - i0]
    p0 = pb * block
    row = tiles[pb][p - p0]
    for q in range(row.shape[0]):
        out[p0 + q] = row[q]


@njit(cache=True, parallel=True)
def keep_block(tiles, block, n, cb, m, skip, starts, idx, val):
    """Write the entries above ``m`` of the tokens of block ``cb``, ascending, from ``starts[c]``.

    Token ``c``'s space must hold one entry more than it keeps (its own row
    is copied branch-free); tokens with ``skip`` write nothing. Reads tiles
    ``0 .. cb`` only, so the caller can free tile ``cb`` after it, going
    down from the last block. Parallel over chunks of the block's tokens.
    """
    c0 = cb * block
    nc = min(c0 + block, n) - c0
    nb = len(tiles)
    chunk = 64
    for part in prange((nc + chunk - 1) // chunk):
        qa = part * chunk
        qb = min(qa + chunk, nc)
        pos = np.zeros(qb - qa, dtype=np.int64)
        live = np.zeros(qb - qa, dtype=np.bool_)
        for q in range(qa, qb):
            pos[q - qa] = starts[c0 + q]
            live[q - qa] = not skip[c0 + q]
        for ib in range(nb):
            i0 = ib * block
            i1 = min(i0 + block, n)
            if ib <= cb:  # column part: rows j of tile ib; few are kept by now, a rare branch
                g = tiles[ib]
                off = c0 - i0
                for j in range(i0, i1):
                    row = g[j - i0][off + qa : off + qb]
                    mj = m[j]
                    for q in range(qb - qa):
                        v = row[q]
                        if v > mj and live[q]:
                            idx[pos[q]] = j
                            val[pos[q]] = v
                            pos[q] += 1
            else:  # the tokens' own rows, columns j of block ib
                g = tiles[cb]
                off = i0 - c0
                mi = m[i0:i1]
                for q in range(qa, qb):
                    if not live[q - qa]:
                        continue
                    row = g[q][off : off + i1 - i0]
                    at = pos[q - qa]
                    for t in range(i1 - i0):
                        v = row[t]
                        idx[at] = i0 + t
                        val[at] = v
                        at += v > mi[t]
                    pos[q - qa] = at


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _gain(store, token, m, w, lanes):
    """Canonical coverage gain of ``token`` from its kept entries (pruning them)."""
    idx_blocks, val_blocks, starts, lengths, block = store
    for q in range(8):
        lanes[q] = 0.0
    b = token // block
    lengths[token] = _accumulate(idx_blocks[b], val_blocks[b], starts[token], lengths[token], m, w, lanes)
    return combine8(lanes[0], lanes[1], lanes[2], lanes[3], lanes[4], lanes[5], lanes[6], lanes[7])


@njit(cache=True, parallel=True)
def _sweep(store, tokens, m, w, cov):
    """Canonical gains of all ``tokens`` at once, in parallel (each prunes only its own entries)."""
    for t in prange(tokens.shape[0]):
        lanes = np.zeros(8)
        cov[t] = _gain(store, tokens[t], m, w, lanes)


@njit(cache=True, nogil=True)
def _add(store, token, m):
    """Raise the running max by a pick's kept entries (those left out are at or below it)."""
    idx_blocks, val_blocks, starts, lengths, block = store
    idx = idx_blocks[token // block]
    val = val_blocks[token // block]
    lo = starts[token]
    for e in range(lo, lo + lengths[token]):
        j = idx[e]
        if val[e] > m[j]:
            m[j] = val[e]
    lengths[token] = 0


@njit(cache=True, nogil=True)
def _better(f, a, b):
    """Heap order: larger bound first, lower index first on ties (greedy's tie rule)."""
    return f[a] > f[b] or (f[a] == f[b] and a < b)


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def heapify(heap, f):
    """Arrange ``heap`` (token ids) as a max-heap of the bounds ``f`` (ties: lower id on top)."""
    size = heap.shape[0]
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(heap, size, pos, f)


@njit(cache=True, nogil=True)
def lazy_steps(
    store,
    m,
    w,
    r,
    r_pos,
    a,
    b,
    c,
    penalty,
    f_bound,
    g_bound,
    fresh_at,
    heap,
    size,
    step,
    stop,
    last,
    order,
    f_gains,
    g_gains,
):
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
            _sweep(store, heap[:size], m, w, cov_all)
            for q in range(size):
                i = heap[q]
                old[q] = f_bound[i]
                f_bound[i] = step_gain(a, r[i], b, cov_all[q], c, penalty[i])
                g_bound[i] = a * r_pos[i] + b * cov_all[q]
                fresh_at[i] = s
            heapify(heap[:size], f_bound)
            evaluations += size
        last = 0
        while True:
            top = heap[0]
            if fresh_at[top] == s:
                break
            cov = _gain(store, top, m, w, lanes)
            evaluations += 1
            f_bound[top] = step_gain(a, r[top], b, cov, c, penalty[top])
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
        _add(store, top, m)
    return size, upper_gain, evaluations, last


@njit(cache=True, parallel=True)
def canonical_products(unit, rows, col_start, out):
    """``out[a, j - col_start] = <unit[rows[a]], unit[j]>`` for ``j >= col_start``, in one fixed order.

    float64 lanes (lane ``t % 8`` accumulates ``x_t y_t`` in ascending ``t``,
    then a fixed tree), so an entry has the same bits whatever rows it is
    computed with and whichever of its two tokens is the row (products
    commute exactly): the similarity is symmetric and batch-independent by
    construction, where a BLAS GEMM promises neither. Scalar float64 lanes:
    much slower than GEMM (``benchmarks/features_products.py``).
    """
    n, d = unit.shape
    for a in prange(rows.shape[0]):
        x = unit[rows[a]]
        for j in range(col_start, n):
            y = unit[j]
            lanes = np.zeros(8)
            for t in range(d):
                lanes[t % 8] += np.float64(x[t]) * np.float64(y[t])
            out[a, j - col_start] = combine8(
                lanes[0], lanes[1], lanes[2], lanes[3], lanes[4], lanes[5], lanes[6], lanes[7]
            )
