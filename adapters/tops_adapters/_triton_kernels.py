"""The Triton kernels of :mod:`tops_adapters.triton_kernels` (imports Triton; loaded on first use).

Kept apart so that importing the driver never imports Triton, and so that
``TRITON_INTERPRET=1`` set before the first selection runs these on CPU
tensors (Triton reads it when it is imported).
"""

import triton
import triton.language as tl

__all__ = ["initial_gains", "greedy_steps"]


@triton.jit
def row_weight(r_ptr, row0, j, mask, n, focus, FOCUS: tl.constexpr):
    """``w_j = (1 - beta) + beta * r_j / mean(r)`` (1 where beta = 0 or mean(r) = 0)."""
    if FOCUS:
        total = tl.zeros((), tl.float64)
        for i0 in range(0, n, 1024):
            idx = i0 + tl.arange(0, 1024)
            total += tl.sum(tl.load(r_ptr + row0 + idx, mask=idx < n, other=0.0).to(tl.float64), axis=0)
        mean = total / n
        r_j = tl.load(r_ptr + row0 + j, mask=mask, other=0.0).to(tl.float64)
        safe = tl.where(mean == 0.0, 1.0, mean)
        return tl.where(mean == 0.0, 1.0, (1.0 - focus) + focus * (r_j / safe))
    else:
        return tl.full(j.shape, 1.0, tl.float64)

@triton.jit
def initial_gains(s_ptr, r_ptr, cov_ptr, g0_ptr, n, a, bw, focus, FOCUS: tl.constexpr,
                  HAS_COV: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_I: tl.constexpr):
    """For one block of candidates ``i``: ``cov_i = sum_j w_j s[j, i]`` and ``g0_i = a r_i^+ + b cov_i``."""
    b = tl.program_id(0)
    row0 = b * n
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    in_cols = cols < n
    base = s_ptr + b.to(tl.int64) * n * n
    acc = tl.zeros((BLOCK_I,), tl.float64)
    if HAS_COV:
        for j0 in range(0, n, BLOCK_J):
            rows = j0 + tl.arange(0, BLOCK_J)
            in_rows = rows < n
            w = row_weight(r_ptr, row0, rows, in_rows, n, focus, FOCUS)
            tile = tl.load(base + rows[:, None].to(tl.int64) * n + cols[None, :],
                           mask=in_rows[:, None] & in_cols[None, :], other=0.0).to(tl.float64)
            acc += tl.sum(tile * tl.where(in_rows, w, 0.0)[:, None], axis=0)
    r = tl.load(r_ptr + row0 + cols, mask=in_cols, other=0.0).to(tl.float64)
    tl.store(cov_ptr + row0 + cols, acc, mask=in_cols)
    tl.store(g0_ptr + row0 + cols, a * tl.maximum(r, 0.0) + bw * acc, mask=in_cols)

@triton.jit
def greedy_steps(s_ptr, r_ptr, cov_ptr, gfin_ptr, m_ptr, pen_ptr, old_ptr, chosen_ptr, changed_ptr,
                 order_ptr, f_ptr, g_ptr, out_ptr, near_ptr, stash_ptr, up_ptr, stale_f_ptr, stale_g_ptr,
                 n, k, a, bw, c, focus, FOCUS: tl.constexpr,
                 HAS_COV: tl.constexpr, HAS_PEN: tl.constexpr, CERT: tl.constexpr,
                 BLOCK: tl.constexpr, ROWS: tl.constexpr, BLOCK_I: tl.constexpr):
    """All ``k`` greedy steps of batch row ``program_id(0)``, then its certificate's pieces.

    ``out[b] = (g(S), f(S), drift bound)``; ``gfin`` gets the padded final gains
    (``-inf`` for the chosen), whose top-``k`` sum the caller adds to ``g(S)``.
    ``near[b]`` is set when a step's two best gains were within twice the
    drift bound (where the core re-decides canonically): the caller re-runs
    that row exactly.

    ``CERT`` picks the certificate's stash (``stash`` ``(B, k + 1, N)`` and
    ``up`` ``(B, k + 1)``, whose ``min_t up + top-k(stash)`` the caller takes):
    ``0`` none (the core's ``Incremental``: ``gfin`` only); ``1`` greedy's, the
    padded gains before every step and after the last; ``2`` lazy's, the gains
    Minoux's heap would hold (an entry is refreshed at a step when its stale
    key ``(f, -i)`` tops the pick's, as the heap pops it before the pick).
    """
    b = tl.program_id(0)
    row0 = b * n
    base = s_ptr + b.to(tl.int64) * n * n
    lane = tl.arange(0, BLOCK)
    # The core's drift-bound inputs: the largest initial coverage gain and |r|.
    g_max = tl.zeros((), tl.float64)
    r_max = tl.zeros((), tl.float64)
    for i0 in range(0, n, BLOCK):
        idx = i0 + lane
        live = idx < n
        g_max = tl.maximum(g_max, tl.max(tl.load(cov_ptr + row0 + idx, mask=live, other=0.0), axis=0))
        r_abs = tl.abs(tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64))
        r_max = tl.maximum(r_max, tl.max(r_abs, axis=0))
    upper = tl.zeros((), tl.float64)
    value = tl.zeros((), tl.float64)
    updates = tl.zeros((), tl.float64)
    pen_max = tl.zeros((), tl.float64)
    near = tl.zeros((), tl.int32)
    eps = 2.220446049250313e-16
    stash_row = stash_ptr + b.to(tl.int64) * (k + 1) * n
    for t in range(0, k):
        # The core's drift bound at this step (its greedy_steps' tol).
        tol = 8.0 * eps * ((n + 4.0 * updates + 16.0) * bw * g_max + a * r_max + bw * g_max + c * pen_max)
        # 1. argmax of f over the candidates, block by block (first maximum wins ties),
        #    and the runner-up, to flag a lead within the drift.
        best = tl.full((), float("-inf"), tl.float64)
        second = tl.full((), float("-inf"), tl.float64)
        pick = tl.zeros((), tl.int32)
        for i0 in range(0, n, BLOCK):
            idx = i0 + lane
            live = idx < n
            r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
            cov_i = tl.load(cov_ptr + row0 + idx, mask=live, other=0.0)
            f = a * r_i
            f += bw * cov_i
            if HAS_PEN:
                f -= c * tl.load(pen_ptr + row0 + idx, mask=live, other=0.0)
            taken = tl.load(chosen_ptr + row0 + idx, mask=live, other=1)
            open_i = live & (taken == 0)
            f = tl.where(open_i, f, float("-inf"))
            if CERT == 1:  # greedy's bound: this step's padded g gains over the candidates
                g_i = a * tl.maximum(r_i, 0.0) + bw * cov_i + bw * tol
                tl.store(stash_row + t * n + idx, tl.where(open_i, g_i, float("-inf")), mask=live)
            block_best = tl.max(f, axis=0)
            block_pick = i0 + tl.argmax(f, axis=0)
            block_second = tl.max(tl.where(idx == block_pick, float("-inf"), f), axis=0)
            better = block_best > best
            second = tl.where(better, tl.maximum(best, block_second), tl.maximum(second, block_best))
            pick = tl.where(better, block_pick, pick)
            best = tl.where(better, block_best, best)
        # Written so that NaN also flags (the core re-decides such a step too).
        near = tl.where(best - second > 2.0 * tol, near, 1)
        if CERT == 1:
            tl.store(up_ptr + b * (k + 1) + t, upper)
        # 2. record the pick: its f gain and its g gain (g drops the penalty, clips r at 0).
        r_p = tl.load(r_ptr + row0 + pick).to(tl.float64)
        cov_p = tl.load(cov_ptr + row0 + pick)
        g_p = a * tl.maximum(r_p, 0.0) + bw * cov_p
        tl.store(order_ptr + b * k + t, pick.to(tl.int64))
        tl.store(f_ptr + b * k + t, best)
        tl.store(g_ptr + b * k + t, g_p)
        if CERT == 2:
            # Lazy's stale gains: refresh what the heap pops before the pick surfaces, then
            # stash them (the pick masked) after the pick; at t = 0 every gain is fresh.
            for i0 in range(0, n, BLOCK):
                idx = i0 + lane
                live = idx < n
                taken = tl.load(chosen_ptr + row0 + idx, mask=live, other=1)
                r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
                cov_i = tl.load(cov_ptr + row0 + idx, mask=live, other=0.0)
                f = a * r_i
                f += bw * cov_i
                if HAS_PEN:
                    f -= c * tl.load(pen_ptr + row0 + idx, mask=live, other=0.0)
                g_i = a * tl.maximum(r_i, 0.0) + bw * cov_i
                old_f = tl.load(stale_f_ptr + row0 + idx, mask=live, other=0.0)
                old_g = tl.load(stale_g_ptr + row0 + idx, mask=live, other=0.0)
                above = (old_f > best) | ((old_f == best) & (idx < pick)) | (idx == pick) | (t == 0)
                refresh = above & (taken == 0)
                new_f = tl.where(refresh, f, old_f)
                new_g = tl.where(refresh, g_i, old_g)
                tl.store(stale_f_ptr + row0 + idx, new_f, mask=live)
                tl.store(stale_g_ptr + row0 + idx, new_g, mask=live)
                if t == 0:  # the bound at S = {}: every fresh gain
                    tl.store(stash_row + idx, g_i + bw * tol, mask=live)
                open_i = (taken == 0) & (idx != pick)
                tl.store(stash_row + (t + 1) * n + idx, tl.where(open_i, new_g + bw * tol, float("-inf")),
                         mask=live)
            tl.store(up_ptr + b * (k + 1) + t + 1, upper + g_p)
        tl.store(chosen_ptr + row0 + pick, 1)
        upper += g_p
        value += a * r_p
        if HAS_PEN:
            # pen[p] is sum over earlier picks u of s[u, p]: this pick's share of the pair sum.
            value -= c * tl.load(pen_ptr + row0 + pick)
            for i0 in range(0, n, BLOCK):
                idx = i0 + lane
                live = idx < n
                row_p = tl.load(base + pick.to(tl.int64) * n + idx, mask=live, other=0.0)
                pen = tl.load(pen_ptr + row0 + idx, mask=live, other=0.0) + row_p.to(tl.float64)
                tl.store(pen_ptr + row0 + idx, pen, mask=live)
                pen_max = tl.maximum(pen_max, tl.max(tl.where(live, pen, 0.0), axis=0))
        if HAS_COV:
            # 3. compact the rows whose running max rises (column p of s, strided).
            count = tl.zeros((), tl.int32)
            for j0 in range(0, n, BLOCK):
                idx = j0 + lane
                live = idx < n
                col = tl.load(base + idx.to(tl.int64) * n + pick, mask=live, other=0.0).to(tl.float64)
                m = tl.load(m_ptr + row0 + idx, mask=live, other=0.0)
                rose = live & (col > m)
                slot = count + tl.cumsum(rose.to(tl.int32), axis=0) - 1
                tl.store(changed_ptr + row0 + slot, idx, mask=rose)
                tl.store(old_ptr + row0 + slot, m, mask=rose)
                tl.store(m_ptr + row0 + idx, tl.where(rose, col, m), mask=live)
                count += tl.sum(rose.to(tl.int32), axis=0)
            tl.debug_barrier()  # the compacted rows and the new m, visible to every thread
            # 4. lower every gain by the risen rows' terms, ROWS rows per tile.
            for i0 in range(0, n, BLOCK_I):
                cand = i0 + tl.arange(0, BLOCK_I)
                in_cand = cand < n
                cov = tl.load(cov_ptr + row0 + cand, mask=in_cand, other=0.0)
                for q0 in range(0, count, ROWS):
                    slots = q0 + tl.arange(0, ROWS)
                    in_rows = slots < count
                    j = tl.load(changed_ptr + row0 + slots, mask=in_rows, other=0)
                    lo = tl.load(old_ptr + row0 + slots, mask=in_rows, other=0.0)
                    hi = tl.load(m_ptr + row0 + j, mask=in_rows, other=0.0)
                    wj = tl.where(in_rows, row_weight(r_ptr, row0, j, in_rows, n, focus, FOCUS), 0.0)
                    tile = tl.load(base + j[:, None].to(tl.int64) * n + cand[None, :],
                                   mask=in_rows[:, None] & in_cand[None, :], other=0.0).to(tl.float64)
                    drop = tl.maximum(tl.minimum(tile, hi[:, None]) - lo[:, None], 0.0) * wj[:, None]
                    cov -= tl.sum(drop, axis=0)
                tl.store(cov_ptr + row0 + cand, cov, mask=in_cand)
            updates += count.to(tl.float64)
        tl.debug_barrier()  # this step's gains and marks, visible to the next step
    # 5. f(S)'s coverage term, the drift bound, the padded final gains.
    if HAS_COV:
        for i0 in range(0, n, BLOCK):
            idx = i0 + lane
            live = idx < n
            w = row_weight(r_ptr, row0, idx, live, n, focus, FOCUS)
            value += bw * tl.sum(tl.where(live, w * tl.load(m_ptr + row0 + idx, mask=live, other=0.0), 0.0),
                                 axis=0)
    tol = 8.0 * eps * ((n + 4.0 * updates + 16.0) * bw * g_max + a * r_max + bw * g_max + c * pen_max)
    for i0 in range(0, n, BLOCK):
        idx = i0 + lane
        live = idx < n
        r = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
        g = a * tl.maximum(r, 0.0) + bw * tl.load(cov_ptr + row0 + idx, mask=live, other=0.0) + bw * tol
        taken = tl.load(chosen_ptr + row0 + idx, mask=live, other=1)
        g = tl.where(taken == 0, g, float("-inf"))
        tl.store(gfin_ptr + row0 + idx, g, mask=live)
        if CERT == 1:
            tl.store(stash_row + k * n + idx, g, mask=live)
    if CERT == 1:
        tl.store(up_ptr + b * (k + 1) + k, upper)
    tl.store(out_ptr + b * 3, upper)
    tl.store(out_ptr + b * 3 + 1, value)
    tl.store(out_ptr + b * 3 + 2, tol)
    tl.store(near_ptr + b, near)
