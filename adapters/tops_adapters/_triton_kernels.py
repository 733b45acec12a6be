"""The Triton kernels of :mod:`tops_adapters.triton_kernels` (imports Triton; loaded on first use).

Kept apart so that importing the driver never imports Triton, and so that
``TRITON_INTERPRET=1`` set before the first selection runs these on CPU
tensors (Triton reads it when it is imported).
"""

import triton
import triton.language as tl

from ._triton_gain import (
    bound_gain,
    coverage_term,
    greedy_tol,
    mean_coverage_error,
    mean_term_error,
    minmax_coverage_error,
    row_drop,
    rule_bound,
    running_drift,
    step_gain,
)

__all__ = ["initial_gains", "greedy_steps", "tops_rule_coverage", "tops_rule_steps"]


@triton.jit
def mean_of(r_ptr, row0, n, FOCUS: tl.constexpr):
    """``mean(r)`` of one batch row (0 without focus: unused), summed once per program."""
    total = tl.zeros((), tl.float64)
    if FOCUS:
        for i0 in range(0, n, 1024):
            idx = i0 + tl.arange(0, 1024)
            total += tl.sum(tl.load(r_ptr + row0 + idx, mask=idx < n, other=0.0).to(tl.float64), axis=0)
    return total / n


@triton.jit
def row_weight(r_ptr, row0, j, mask, mean, focus, FOCUS: tl.constexpr):
    """``w_j = (1 - beta) + beta * r_j / mean(r)`` (1 where beta = 0 or mean(r) = 0)."""
    if FOCUS:
        r_j = tl.load(r_ptr + row0 + j, mask=mask, other=0.0).to(tl.float64)
        safe = tl.where(mean == 0.0, 1.0, mean)
        return tl.where(mean == 0.0, 1.0, (1.0 - focus) + focus * (r_j / safe))
    else:
        return tl.full(j.shape, 1.0, tl.float64)


@triton.jit
def fold_argmax(f, i0, idx, best, second, pick):
    """Fold one block of gains (indices ``i0 + arange``) into the running first maximum and runner-up."""
    block_best = tl.max(f, axis=0)
    block_pick = i0 + tl.argmax(f, axis=0)
    block_second = tl.max(tl.where(idx == block_pick, float("-inf"), f), axis=0)
    better = block_best > best
    second = tl.where(better, tl.maximum(best, block_second), tl.maximum(second, block_best))
    pick = tl.where(better, block_pick, pick)
    best = tl.where(better, block_best, best)
    return best, second, pick


@triton.jit
def initial_gains(
    s_ptr,
    r_ptr,
    cov_ptr,
    g0_ptr,
    n,
    a,
    bw,
    focus,
    FOCUS: tl.constexpr,
    HAS_COV: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """For one block of candidates ``i``: ``cov_i = sum_j w_j s[j, i]`` and ``g0_i = a r_i^+ + b cov_i``."""
    b = tl.program_id(0)
    row0 = b * n
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    in_cols = cols < n
    base = s_ptr + b.to(tl.int64) * n * n
    acc = tl.zeros((BLOCK_I,), tl.float64)
    if HAS_COV:
        mean = mean_of(r_ptr, row0, n, FOCUS)
        for j0 in range(0, n, BLOCK_J):
            rows = j0 + tl.arange(0, BLOCK_J)
            in_rows = rows < n
            w = row_weight(r_ptr, row0, rows, in_rows, mean, focus, FOCUS)
            tile = tl.load(
                base + rows[:, None].to(tl.int64) * n + cols[None, :],
                mask=in_rows[:, None] & in_cols[None, :],
                other=0.0,
            ).to(tl.float64)
            acc += tl.sum(tile * tl.where(in_rows, w, 0.0)[:, None], axis=0)
    r = tl.load(r_ptr + row0 + cols, mask=in_cols, other=0.0).to(tl.float64)
    tl.store(cov_ptr + row0 + cols, acc, mask=in_cols)
    tl.store(g0_ptr + row0 + cols, bound_gain(a, r, bw, acc), mask=in_cols)


@triton.jit
def greedy_steps(
    s_ptr,
    r_ptr,
    cov_ptr,
    gfin_ptr,
    m_ptr,
    pen_ptr,
    old_ptr,
    chosen_ptr,
    changed_ptr,
    order_ptr,
    f_ptr,
    g_ptr,
    out_ptr,
    near_ptr,
    stash_ptr,
    up_ptr,
    stale_f_ptr,
    stale_g_ptr,
    forced_ptr,
    n,
    k,
    a,
    bw,
    c,
    focus,
    FOCUS: tl.constexpr,
    HAS_COV: tl.constexpr,
    HAS_PEN: tl.constexpr,
    CERT: tl.constexpr,
    FORCED: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
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

    ``FORCED``: the picks are read from ``forced`` ``(B, k)`` instead (a rule's
    order), so the same pass gives that order's gains, value and certificate.
    """
    b = tl.program_id(0)
    row0 = b * n
    base = s_ptr + b.to(tl.int64) * n * n
    lane = tl.arange(0, BLOCK)
    mean = mean_of(r_ptr, row0, n, FOCUS)  # of the coverage weights, once
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
    stash_row = stash_ptr + b.to(tl.int64) * (k + 1) * n
    # With a coverage term, each step's last pass (the gain update, which finalises every
    # candidate's gain) also takes the next step's argmax: one pass fewer per step.
    FOLDED: tl.constexpr = HAS_COV and not FORCED
    best = tl.full((), float("-inf"), tl.float64)
    second = tl.full((), float("-inf"), tl.float64)
    pick = tl.zeros((), tl.int32)
    if FOLDED:  # step 0's argmax (nothing chosen yet; the drift bound at S = {})
        tol = greedy_tol(n, updates, a, r_max, bw, g_max, c, pen_max)
        for i0 in range(0, n, BLOCK):
            idx = i0 + lane
            live = idx < n
            r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
            cov_i = tl.load(cov_ptr + row0 + idx, mask=live, other=0.0)
            f = tl.where(live, step_gain(a, r_i, bw, cov_i, c, 0.0, False), float("-inf"))  # no penalty yet
            if CERT == 1:  # greedy's bound: the padded g gains at S = {}
                g_i = bound_gain(a, r_i, bw, cov_i) + bw * tol
                tl.store(stash_row + idx, tl.where(live, g_i, float("-inf")), mask=live)
            best, second, pick = fold_argmax(f, i0, idx, best, second, pick)
    for t in range(0, k):
        # The core's drift bound at this step (its greedy_steps' tol).
        tol = greedy_tol(n, updates, a, r_max, bw, g_max, c, pen_max)
        # 1. argmax of f over the candidates, block by block (first maximum wins ties),
        #    and the runner-up, to flag a lead within the drift (FOLDED: taken last step).
        if FORCED:
            pick = tl.load(forced_ptr + b * k + t).to(tl.int32)
            r_p = tl.load(r_ptr + row0 + pick).to(tl.float64)
            pen_p = tl.load(pen_ptr + row0 + pick) if HAS_PEN else 0.0
            best = step_gain(a, r_p, bw, tl.load(cov_ptr + row0 + pick), c, pen_p, HAS_PEN)
            if CERT == 1:  # greedy's bound along the given order: the candidates' padded g gains
                for i0 in range(0, n, BLOCK):
                    idx = i0 + lane
                    live = idx < n
                    r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
                    cov_i = tl.load(cov_ptr + row0 + idx, mask=live, other=0.0)
                    g_i = bound_gain(a, r_i, bw, cov_i) + bw * tol
                    taken = tl.load(chosen_ptr + row0 + idx, mask=live, other=1)
                    tl.store(
                        stash_row + t * n + idx, tl.where(live & (taken == 0), g_i, float("-inf")), mask=live
                    )
        elif not FOLDED:
            best = tl.full((), float("-inf"), tl.float64)
            second = tl.full((), float("-inf"), tl.float64)
            pick = tl.zeros((), tl.int32)
            for i0 in range(0, n, BLOCK):
                idx = i0 + lane
                live = idx < n
                r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
                cov_i = tl.load(cov_ptr + row0 + idx, mask=live, other=0.0)
                pen_i = tl.load(pen_ptr + row0 + idx, mask=live, other=0.0) if HAS_PEN else 0.0
                f = step_gain(a, r_i, bw, cov_i, c, pen_i, HAS_PEN)
                taken = tl.load(chosen_ptr + row0 + idx, mask=live, other=1)
                open_i = live & (taken == 0)
                f = tl.where(open_i, f, float("-inf"))
                if CERT == 1:  # greedy's bound: this step's padded g gains over the candidates
                    g_i = bound_gain(a, r_i, bw, cov_i) + bw * tol
                    tl.store(stash_row + t * n + idx, tl.where(open_i, g_i, float("-inf")), mask=live)
                best, second, pick = fold_argmax(f, i0, idx, best, second, pick)
        # Written so that NaN also flags (the core re-decides such a step too).
        if not FORCED:
            near = tl.where(best - second > 2.0 * tol, near, 1)
        if CERT == 1:
            tl.store(up_ptr + b * (k + 1) + t, upper)
        # 2. record the pick: its f gain and its g gain (g drops the penalty, clips r at 0).
        r_p = tl.load(r_ptr + row0 + pick).to(tl.float64)
        cov_p = tl.load(cov_ptr + row0 + pick)
        g_p = bound_gain(a, r_p, bw, cov_p)
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
                pen_i = tl.load(pen_ptr + row0 + idx, mask=live, other=0.0) if HAS_PEN else 0.0
                f = step_gain(a, r_i, bw, cov_i, c, pen_i, HAS_PEN)
                g_i = bound_gain(a, r_i, bw, cov_i)
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
                tl.store(
                    stash_row + (t + 1) * n + idx,
                    tl.where(open_i, new_g + bw * tol, float("-inf")),
                    mask=live,
                )
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
            updates += count.to(tl.float64)
            # The next step's drift bound (its updates and penalty are final now).
            tol_next = greedy_tol(n, updates, a, r_max, bw, g_max, c, pen_max)
            picked = pick
            if FOLDED:
                best = tl.full((), float("-inf"), tl.float64)
                second = tl.full((), float("-inf"), tl.float64)
                pick = tl.zeros((), tl.int32)
            # 4. lower every gain by the risen rows' terms, ROWS rows per tile; then the next argmax.
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
                    wj = tl.where(in_rows, row_weight(r_ptr, row0, j, in_rows, mean, focus, FOCUS), 0.0)
                    tile = tl.load(
                        base + j[:, None].to(tl.int64) * n + cand[None, :],
                        mask=in_rows[:, None] & in_cand[None, :],
                        other=0.0,
                    ).to(tl.float64)
                    cov -= tl.sum(row_drop(tile, hi[:, None], lo[:, None], wj[:, None]), axis=0)
                tl.store(cov_ptr + row0 + cand, cov, mask=in_cand)
                if FOLDED:
                    r_i = tl.load(r_ptr + row0 + cand, mask=in_cand, other=0.0).to(tl.float64)
                    pen_i = tl.load(pen_ptr + row0 + cand, mask=in_cand, other=0.0) if HAS_PEN else 0.0
                    f = step_gain(a, r_i, bw, cov, c, pen_i, HAS_PEN)
                    taken = tl.load(chosen_ptr + row0 + cand, mask=in_cand, other=1)
                    open_i = in_cand & (taken == 0) & (cand != picked)
                    f = tl.where(open_i, f, float("-inf"))
                    if CERT == 1:  # greedy's bound: the next step's padded g gains (row k: the final one)
                        g_i = bound_gain(a, r_i, bw, cov) + bw * tol_next
                        tl.store(
                            stash_row + (t + 1) * n + cand, tl.where(open_i, g_i, float("-inf")), mask=in_cand
                        )
                    best, second, pick = fold_argmax(f, i0, cand, best, second, pick)
        tl.debug_barrier()  # this step's gains and marks, visible to the next step
    # 5. f(S)'s coverage term, the drift bound, the padded final gains.
    if HAS_COV:
        for i0 in range(0, n, BLOCK):
            idx = i0 + lane
            live = idx < n
            w = row_weight(r_ptr, row0, idx, live, mean, focus, FOCUS)
            value += bw * tl.sum(
                tl.where(live, w * tl.load(m_ptr + row0 + idx, mask=live, other=0.0), 0.0), axis=0
            )
    tol = greedy_tol(n, updates, a, r_max, bw, g_max, c, pen_max)
    for i0 in range(0, n, BLOCK):
        idx = i0 + lane
        live = idx < n
        r = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
        g = bound_gain(a, r, bw, tl.load(cov_ptr + row0 + idx, mask=live, other=0.0)) + bw * tol
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


# ------------------------------------------------------------------ TOPS rule
@triton.jit
def first_argmax(x_ptr, row0, n, BLOCK: tl.constexpr):
    """Index of the first maximum of ``x[row0 : row0 + n]`` (``np.argmax``'s tie rule)."""
    best = tl.full((), float("-inf"), tl.float64)
    pick = tl.zeros((), tl.int32)
    for i0 in range(0, n, BLOCK):
        idx = i0 + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row0 + idx, mask=idx < n, other=float("-inf")).to(tl.float64)
        block_best = tl.max(x, axis=0)
        better = block_best > best
        pick = tl.where(better, i0 + tl.argmax(x, axis=0), pick)
        best = tl.where(better, block_best, best)
    return pick


@triton.jit
def ordinary(x):
    """0 or a normal float well inside the range: where the core's relative bounds hold."""
    size = tl.abs(x)
    return (x == 0.0) | ((size >= 1e-290) & (size <= 1e290))


@triton.jit
def tops_rule_coverage(cols_ptr, r_ptr, c_ptr, n, BLOCK_J: tl.constexpr, BLOCK_I: tl.constexpr):
    """Coverage after the seed ``s0 = argmax r``: ``c_i = sum_{j != s0} max(0, F[i, j] - F[j, s0])``.

    ``cols`` is ``F`` transposed (``cols[j, i] = F[i, j]``), so both the tile
    and the running max ``m_j = cols[s0, j]`` are contiguous reads.
    """
    b = tl.program_id(0)
    row0 = b * n
    base = cols_ptr + b.to(tl.int64) * n * n
    seed = first_argmax(r_ptr, row0, n, BLOCK_I)
    cand = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    in_cand = cand < n
    acc = tl.zeros((BLOCK_I,), tl.float64)
    for j0 in range(0, n, BLOCK_J):
        rows = j0 + tl.arange(0, BLOCK_J)
        keep = (rows < n) & (rows != seed)
        m = tl.load(base + seed.to(tl.int64) * n + rows, mask=rows < n, other=0.0).to(tl.float64)
        tile = tl.load(
            base + rows[:, None].to(tl.int64) * n + cand[None, :],
            mask=keep[:, None] & in_cand[None, :],
            other=0.0,
        ).to(tl.float64)
        acc += tl.sum(tl.where(keep[:, None], coverage_term(tile, m[:, None], 1.0), 0.0), axis=0)
    tl.store(c_ptr + row0 + cand, acc, mask=in_cand)


@triton.jit
def fold_stats(
    r_i,
    d_i,
    c_i,
    open_i,
    s_r,
    s_d,
    s_c,
    lo_r,
    lo_d,
    lo_c,
    hi_r,
    hi_d,
    hi_c,
    abs_r,
    abs_d,
    MINMAX: tl.constexpr,
):
    """Fold one block of candidates into the normalisation statistics (sums or minima and maxima)."""
    inf = float("inf")
    if MINMAX:
        lo_r = tl.minimum(lo_r, tl.min(tl.where(open_i, r_i, inf), axis=0))
        hi_r = tl.maximum(hi_r, tl.max(tl.where(open_i, r_i, -inf), axis=0))
        lo_d = tl.minimum(lo_d, tl.min(tl.where(open_i, d_i, inf), axis=0))
        hi_d = tl.maximum(hi_d, tl.max(tl.where(open_i, d_i, -inf), axis=0))
        lo_c = tl.minimum(lo_c, tl.min(tl.where(open_i, c_i, inf), axis=0))
        hi_c = tl.maximum(hi_c, tl.max(tl.where(open_i, c_i, -inf), axis=0))
    else:
        s_r += tl.sum(tl.where(open_i, r_i, 0.0), axis=0)
        s_d += tl.sum(tl.where(open_i, d_i, 0.0), axis=0)
        s_c += tl.sum(tl.where(open_i, c_i, 0.0), axis=0)
        abs_r = tl.maximum(abs_r, tl.max(tl.where(open_i, tl.abs(r_i), 0.0), axis=0))
        abs_d = tl.maximum(abs_d, tl.max(tl.where(open_i, tl.abs(d_i), 0.0), axis=0))
    return s_r, s_d, s_c, lo_r, lo_d, lo_c, hi_r, hi_d, hi_c, abs_r, abs_d


@triton.jit
def tops_rule_steps(
    cols_ptr,
    r_ptr,
    c_ptr,
    m_ptr,
    old_ptr,
    chosen_ptr,
    changed_ptr,
    order_ptr,
    near_ptr,
    n,
    k,
    alpha,
    lam,
    MINMAX: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_C: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """All ``k`` steps of the TOPS rule for batch row ``program_id(0)`` (``k >= 1``).

    The core's :func:`~tops_core.solvers._kernels.tops_rule_steps` in one
    program. A step is two or three passes over the candidates: the scores
    (with the transcription's own arithmetic: divisions, terms added in its
    order) and their first argmax; the pick's column term leaves every
    coverage while the rows whose running max rose are compacted; those rows
    lower every coverage. The last pass of a step, which finalises each
    candidate's values, also gathers the next step's normalisation
    statistics (no pass of their own). Where the core would hand a step to
    the exact transcription (a lead within twice its rounding bound, or
    magnitudes outside its bounds' range), ``near[b]`` is set and the caller
    re-runs the row exactly.
    """
    b = tl.program_id(0)
    row0 = b * n
    base = cols_ptr + b.to(tl.int64) * n * n
    lane = tl.arange(0, BLOCK)
    inf = float("inf")
    seed = first_argmax(r_ptr, row0, n, BLOCK)
    tl.store(order_ptr + b * k, seed.to(tl.int64))
    tl.store(chosen_ptr + row0 + seed, 1)
    # The running max after the seed, the largest initial coverage, the first step's statistics.
    c_max = tl.zeros((), tl.float64)
    s_r = tl.zeros((), tl.float64)
    s_d = tl.zeros((), tl.float64)
    s_c = tl.zeros((), tl.float64)
    lo_r = tl.full((), inf, tl.float64)
    lo_d = tl.full((), inf, tl.float64)
    lo_c = tl.full((), inf, tl.float64)
    hi_r = tl.full((), -inf, tl.float64)
    hi_d = tl.full((), -inf, tl.float64)
    hi_c = tl.full((), -inf, tl.float64)
    abs_r = tl.zeros((), tl.float64)
    abs_d = tl.zeros((), tl.float64)
    for i0 in range(0, n, BLOCK):
        idx = i0 + lane
        live = idx < n
        m = tl.load(base + seed.to(tl.int64) * n + idx, mask=live, other=0.0).to(tl.float64)
        tl.store(m_ptr + row0 + idx, m, mask=live)
        c_i = tl.load(c_ptr + row0 + idx, mask=live, other=0.0)
        if HAS_C:
            c_max = tl.maximum(c_max, tl.max(c_i, axis=0))
        r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
        s_r, s_d, s_c, lo_r, lo_d, lo_c, hi_r, hi_d, hi_c, abs_r, abs_d = fold_stats(
            r_i,
            1.0 - m,
            c_i,
            live & (idx != seed),
            s_r,
            s_d,
            s_c,
            lo_r,
            lo_d,
            lo_c,
            hi_r,
            hi_d,
            hi_c,
            abs_r,
            abs_d,
            MINMAX,
        )
    tl.debug_barrier()
    near = tl.zeros((), tl.int32)
    updates = tl.zeros((), tl.float64)
    count = n - 1
    for t in range(1, k):
        eps_c = running_drift(n, updates, c_max)
        # 1. The per-step normalisation over the candidates (d_i = 1 - m_i).
        if MINMAX:
            r_lo = lo_r
            d_lo = lo_d
            c_lo = lo_c
            r_sc = hi_r - lo_r
            d_sc = hi_d - lo_d
            c_sc = hi_c - lo_c
        else:
            r_lo = tl.zeros((), tl.float64)
            d_lo = tl.zeros((), tl.float64)
            c_lo = tl.zeros((), tl.float64)
            r_sc = s_r / count
            d_sc = s_d / count
            c_sc = s_c / count
        r_abs = abs_r
        d_abs = abs_d
        # 2. The core's bound on |running score - transcription's score| (its tops_rule_steps).
        fine = ordinary(r_sc) & ordinary(r_abs) & ordinary(r_lo)
        if HAS_D:
            fine = fine & ordinary(d_sc) & ordinary(d_abs) & ordinary(d_lo)
        if HAS_C:
            fine = fine & ordinary(c_sc) & ordinary(c_lo) & ordinary(c_max + eps_c)
        err_r = tl.zeros((), tl.float64)
        err_d = tl.zeros((), tl.float64)
        err_c = tl.zeros((), tl.float64)
        if MINMAX:
            if HAS_C:
                c_fine, err_c = minmax_coverage_error(c_sc, eps_c)
                fine = fine & c_fine
        else:
            r_fine, err_r = mean_term_error(n, r_sc, r_abs)
            fine = fine & r_fine
            if HAS_D:
                d_fine, err_d = mean_term_error(n, d_sc, d_abs)
                fine = fine & d_fine
            if HAS_C:
                c_fine, err_c = mean_coverage_error(n, c_sc, c_max, eps_c)
                fine = fine & c_fine
        # 3. Scores as the transcription computes them; first maximum; runner-up for the bound.
        r_div = tl.where(r_sc == 0.0, 1.0, r_sc)
        d_div = tl.where(d_sc == 0.0, 1.0, d_sc)
        c_div = tl.where(c_sc == 0.0, 1.0, c_sc)
        best = tl.full((), -inf, tl.float64)
        second = tl.full((), -inf, tl.float64)
        top = tl.zeros((), tl.float64)
        pick = tl.zeros((), tl.int32)
        for i0 in range(0, n, BLOCK):
            idx = i0 + lane
            live = idx < n
            open_i = live & (tl.load(chosen_ptr + row0 + idx, mask=live, other=1) == 0)
            r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
            term = tl.where(r_sc == 0.0, 0.0, (r_i - r_lo) / r_div)
            score = term
            size = tl.abs(term)
            if HAS_D:
                d_i = 1.0 - tl.load(m_ptr + row0 + idx, mask=live, other=0.0)
                term = alpha * tl.where(d_sc == 0.0, 0.0, (d_i - d_lo) / d_div)
                score = score + term
                size += tl.abs(term)
            if HAS_C:
                c_i = tl.load(c_ptr + row0 + idx, mask=live, other=0.0)
                term = lam * tl.where(c_sc == 0.0, 0.0, (c_i - c_lo) / c_div)
                score = score + term
                size += tl.abs(term)
            score = tl.where(open_i, score, -inf)
            top = tl.maximum(top, tl.max(tl.where(open_i, size, 0.0), axis=0))
            block_best = tl.max(score, axis=0)
            block_pick = i0 + tl.argmax(score, axis=0)
            block_second = tl.max(tl.where(idx == block_pick, -inf, score), axis=0)
            better = block_best > best
            second = tl.where(better, tl.maximum(best, block_second), tl.maximum(second, block_best))
            pick = tl.where(better, block_pick, pick)
            best = tl.where(better, block_best, best)
        bound = rule_bound(err_r, alpha, err_d, lam, err_c, top)
        # Written so that NaN or inf anywhere flags the row (the core runs the transcription there).
        clear = fine & (best - second > 2.0 * bound) & (bound < inf)
        near = tl.where(clear | (count == 1), near, 1)
        # 4. Record the pick; its column's term leaves every coverage (at the old m_p).
        tl.store(order_ptr + b * k + t, pick.to(tl.int64))
        tl.store(chosen_ptr + row0 + pick, 1)
        count -= 1
        col_p = base + pick.to(tl.int64) * n
        m_p = tl.load(m_ptr + row0 + pick)
        n_changed = tl.zeros((), tl.int32)
        # The next step's statistics start here (gathered by this step's last pass).
        s_r = tl.zeros((), tl.float64)
        s_d = tl.zeros((), tl.float64)
        s_c = tl.zeros((), tl.float64)
        lo_r = tl.full((), inf, tl.float64)
        lo_d = tl.full((), inf, tl.float64)
        lo_c = tl.full((), inf, tl.float64)
        hi_r = tl.full((), -inf, tl.float64)
        hi_d = tl.full((), -inf, tl.float64)
        hi_c = tl.full((), -inf, tl.float64)
        abs_r = tl.zeros((), tl.float64)
        abs_d = tl.zeros((), tl.float64)
        for j0 in range(0, n, BLOCK):
            idx = j0 + lane
            live = idx < n
            hi = tl.load(col_p + idx, mask=live, other=0.0).to(tl.float64)
            m = tl.load(m_ptr + row0 + idx, mask=live, other=0.0)
            rose = live & (hi > m)
            taken = tl.load(chosen_ptr + row0 + idx, mask=live, other=1)
            open_i = live & (taken == 0) & (idx != pick)
            new_m = tl.where(rose, hi, m)
            if HAS_C:
                c_i = tl.load(c_ptr + row0 + idx, mask=live, other=0.0)
                tl.store(c_ptr + row0 + idx, c_i - coverage_term(hi, m_p, 1.0), mask=live)
                # 5. Compact the candidate rows whose running max rises.
                moved = rose & open_i
                slot = n_changed + tl.cumsum(moved.to(tl.int32), axis=0) - 1
                tl.store(changed_ptr + row0 + slot, idx, mask=moved)
                tl.store(old_ptr + row0 + slot, m, mask=moved)
                n_changed += tl.sum(moved.to(tl.int32), axis=0)
            else:  # the last pass of the step: the next step's statistics (no coverage term)
                r_i = tl.load(r_ptr + row0 + idx, mask=live, other=0.0).to(tl.float64)
                s_r, s_d, s_c, lo_r, lo_d, lo_c, hi_r, hi_d, hi_c, abs_r, abs_d = fold_stats(
                    r_i,
                    1.0 - new_m,
                    tl.zeros_like(r_i),
                    open_i,
                    s_r,
                    s_d,
                    s_c,
                    lo_r,
                    lo_d,
                    lo_c,
                    hi_r,
                    hi_d,
                    hi_c,
                    abs_r,
                    abs_d,
                    MINMAX,
                )
            tl.store(m_ptr + row0 + idx, new_m, mask=live)
        tl.debug_barrier()  # the compacted rows and the new m, visible to every thread
        if HAS_C:
            # 6. Lower every coverage by the risen rows' terms, ROWS rows per tile; then fold the
            #    final values into the next step's statistics.
            for i0 in range(0, n, BLOCK_I):
                cand = i0 + tl.arange(0, BLOCK_I)
                in_cand = cand < n
                c_i = tl.load(c_ptr + row0 + cand, mask=in_cand, other=0.0)
                for q0 in range(0, n_changed, ROWS):
                    slots = q0 + tl.arange(0, ROWS)
                    in_rows = slots < n_changed
                    j = tl.load(changed_ptr + row0 + slots, mask=in_rows, other=0)
                    lo = tl.load(old_ptr + row0 + slots, mask=in_rows, other=0.0)
                    hi = tl.load(m_ptr + row0 + j, mask=in_rows, other=0.0)
                    tile = tl.load(
                        base + j[:, None].to(tl.int64) * n + cand[None, :],
                        mask=in_rows[:, None] & in_cand[None, :],
                        other=0.0,
                    ).to(tl.float64)
                    drop = row_drop(tile, hi[:, None], lo[:, None], 1.0)
                    c_i -= tl.sum(tl.where(in_rows[:, None], drop, 0.0), axis=0)
                tl.store(c_ptr + row0 + cand, c_i, mask=in_cand)
                taken = tl.load(chosen_ptr + row0 + cand, mask=in_cand, other=1)
                open_i = in_cand & (taken == 0) & (cand != pick)
                r_i = tl.load(r_ptr + row0 + cand, mask=in_cand, other=0.0).to(tl.float64)
                d_i = 1.0 - tl.load(m_ptr + row0 + cand, mask=in_cand, other=0.0)
                s_r, s_d, s_c, lo_r, lo_d, lo_c, hi_r, hi_d, hi_c, abs_r, abs_d = fold_stats(
                    r_i,
                    d_i,
                    c_i,
                    open_i,
                    s_r,
                    s_d,
                    s_c,
                    lo_r,
                    lo_d,
                    lo_c,
                    hi_r,
                    hi_d,
                    hi_c,
                    abs_r,
                    abs_d,
                    MINMAX,
                )
            updates += n_changed.to(tl.float64)
        tl.debug_barrier()  # this step's coverage, marks and m, visible to the next step
    tl.store(near_ptr + b, near)
