"""Features mode: select from token features without ever holding the N x N similarity.

``select(scores, Features(x), k)`` gives the order and gains of greedy on
``Features(x).dense()``, bit for bit. That needs every similarity entry to have
one value whatever rows it is computed with, and ``s_ij == s_ji``: rows are
built by BLAS where this process's GEMM behaves so (probed once per dtype and
``d``, :func:`blas_is_consistent`), else by a fixed-order kernel
(:data:`PRODUCTS` forces either). Rows are built a
few on demand at first, then (when most gains keep needing re-evaluation,
as when a noise floor shrinks every gain each step) one pass that keeps the
upper half of the similarity for a few steps, then only each token's entries
above the running max. Extra memory stays under :data:`PASS_BYTES` plus
``O(N d + ROW_BLOCK N)``; past it, gains are evaluated from rows only.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

import numpy as np

from tops_core._dispatch import to_numpy
from tops_core._numba import fast_for, feature_kernels, gain_kernels
from tops_core._validate import (
    InvalidInputError,
    check_array_kind,
    check_budget,
    check_magnitudes,
    check_memory,
    describe,
)
from tops_core.objective import LANES, Objective, lane_sum, lane_tree
from tops_core.selection import Selection
from tops_core.similarity import unit_rows
from tops_core.solvers._result import certified_selection, top_sum

__all__ = ["Features"]

#: Rows of the similarity built per BLAS call in full passes (bounds the extra
#: memory to ``ROW_BLOCK * N`` floats).
ROW_BLOCK = 1024

#: Rows per BLAS call in the pass over the similarity (the row blocks of its
#: kept upper half).
PASS_BLOCK = 512

#: Most bytes the pass may keep: the upper half of the similarity, then each
#: token's entries above the running max (index and value). Past it, gains
#: keep being evaluated from rows.
PASS_BYTES = 900 * 2**20

#: Largest N whose kept entries store their column index in 16 bits.
SMALL_INDEX_N = 2**16

#: How similarity rows are multiplied: ``"auto"`` (BLAS where
#: :func:`blas_is_consistent`, else the fixed-order kernel), ``"blas"`` or
#: ``"canonical"``.
PRODUCTS = "auto"


def _blas_products(unit: np.ndarray, idx: np.ndarray, col_start: int) -> np.ndarray:
    """``unit[idx] @ unit[col_start:].T`` as one matrix-matrix product.

    A lone row or a lone column is computed twice: OpenBLAS forwards a GEMM
    with one row or one column to its matrix-vector kernel, which may round
    differently.
    """
    lone_row = idx.shape[0] == 1
    lone_col = unit.shape[0] - col_start == 1
    rows = unit[np.repeat(idx, 2) if lone_row else idx]
    cols = unit[[col_start, col_start]] if lone_col else unit[col_start:]
    block = rows @ cols.T
    return block[: 1 if lone_row else None, : 1 if lone_col else None]


#: Token counts of the BLAS probe: whether an entry's bits depend on the batch
#: can change with the size of the product (seen: consistent at 67 rows, not at
#: 601, on an AVX-512 Xeon).
_PROBE_SIZES = (67, 601)


@functools.cache
def blas_is_consistent(dtype: np.dtype, d: int) -> bool:
    """Whether BLAS gives each entry of ``U Uᵀ`` the same bits in any row batch and column range, symmetric.

    OpenBLAS does on some CPU kernels and not on others (edge tiles, AVX2 vs
    AVX-512 paths, the matrix-vector forward); probed on random rows of width
    ``d`` (:data:`_PROBE_SIZES` of them) with the batch shapes features mode
    uses, a lone column included.
    """
    rng = np.random.default_rng(0)
    for n in _PROBE_SIZES:
        unit = rng.standard_normal((n, d)).astype(dtype)
        full = _blas_products(unit, np.arange(n), 0)
        if not np.array_equal(full, full.T):
            return False
        for start, size in ((0, 1), (3, 7), (17, 16), (40, 27)):
            for col in (0, 5, 33, n // 2, n - 1):
                rows = np.arange(start, start + size)
                if not np.array_equal(_blas_products(unit, rows, col), full[rows, col:]):
                    return False
    return True


class Features:
    """Token features standing in for ``sim = (1 + cos) / 2`` (or raw ``cos``).

    Parameters
    ----------
    features : array_like, shape (N, d)
        Token features (NumPy or array-like; float32 stays float32).
    shift : bool, default True
        ``(1 + cos) / 2`` in ``[0, 1]`` (what :func:`tops_core.select` needs);
        ``False`` keeps the raw cosine, which ``select`` rejects if negative.

    Examples
    --------
    >>> import numpy as np, tops_core
    >>> x = np.eye(4)[[0, 0, 1, 2, 3, 3]] + 0.01
    >>> sel = tops_core.select(np.ones(6), tops_core.Features(x), 4)
    >>> sel.indices.tolist()
    [0, 2, 3, 4]
    """

    def __init__(self, features, *, shift: bool = True) -> None:
        check_array_kind("features", features)
        given = describe(features)
        x = to_numpy(features)
        if x.ndim != 2 or x.dtype.kind not in "fiu":
            raise InvalidInputError(f"features must be a real array of shape (N, d); got {given}")
        if x.dtype.kind != "f":
            check_memory(f"features of shape {x.shape} (an integer dtype, widened to float64)", 16.0 * x.size)
            x = x.astype(np.float64)
        check_memory(f"features of shape {x.shape} (their unit rows)", 1.0 * x.nbytes)
        if not np.isfinite(x).all():
            raise InvalidInputError(f"features must be finite (no NaN or inf); got {given} with NaN or inf")
        self.unit = unit_rows(x)
        self.shift = bool(shift)
        self.given = given

    @property
    def n(self) -> int:
        """Number of tokens ``N``."""
        return self.unit.shape[0]

    @property
    def dtype(self) -> np.dtype:
        """Float dtype of the similarity rows."""
        return self.unit.dtype

    @property
    def products(self) -> str:
        """``"blas"`` or ``"canonical"``: how this object multiplies rows (see :data:`PRODUCTS`)."""
        if PRODUCTS != "auto":
            return PRODUCTS
        return "blas" if blas_is_consistent(self.unit.dtype, self.unit.shape[1]) else "canonical"

    def take(self, indices) -> np.ndarray:
        """Similarity rows ``indices`` (any order), shape ``(len(indices), N)``.

        Every entry has the same bits whatever rows it is batched with, and
        ``take([i])[0, j] == take([j])[0, i]`` (checked in the tests).
        """
        return self.product(indices)

    def product(self, indices, col_start: int = 0) -> np.ndarray:
        """Rows ``indices`` restricted to the columns ``col_start ..``: :meth:`take`'s bits."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.products == "blas":
            block = _blas_products(self.unit, idx, col_start)
        else:
            exact = np.empty((idx.shape[0], self.n - col_start))
            feature_kernels().canonical_products(self.unit, idx, col_start, exact)
            block = exact.astype(self.unit.dtype)
        np.clip(block, -1.0, 1.0, out=block)  # rounding can leave |cos| a hair above 1
        if self.shift:
            block += 1.0
            block *= 0.5
        return block

    def blocks(self):
        """Yield ``(start, rows)`` over blocks of :data:`ROW_BLOCK` rows."""
        for start in range(0, self.n, ROW_BLOCK):
            yield start, self.take(np.arange(start, min(start + ROW_BLOCK, self.n)))

    def dense(self) -> np.ndarray:
        """The full ``(N, N)`` similarity this object stands for (for small N and tests)."""
        check_memory(
            f"Features.dense() with N = {self.n} tokens", 1.0 * self.n * self.n * self.dtype.itemsize
        )
        return np.vstack([rows for _, rows in self.blocks()])

    def __repr__(self) -> str:
        return f"Features({self.given}, shift={self.shift})"


def _initial_coverage(feats: Features, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Canonical coverage gains at ``S = {}`` (column sums, one block pass) and min of sim."""
    lanes = np.zeros((LANES, feats.n), dtype=np.float64)
    lowest = np.inf
    fast = fast_for(feats.unit)
    zero_m = np.zeros(feats.n)
    for start, rows in feats.blocks():
        lowest = min(lowest, float(rows.min()))
        if fast:
            gain_kernels().add_lanes(rows, start, w, zero_m, lanes)
        else:
            for t in range(rows.shape[0]):
                lanes[(start + t) % LANES] += rows[t] * w[start + t]
    return lane_tree(lanes), lowest


def _gamma(count: float, unit: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: relative error of ``n`` roundings."""
    return count * unit / (1.0 - count * unit)


def coverage_bound(feats: Features, w: np.ndarray) -> np.ndarray:
    """Upper bounds of the canonical coverage gains at ``S = {}``, in ``O(N d)`` (``shift=True``).

    At ``S = {}`` the running max is 0 and every term ``w_j s[j, i]`` is
    non-negative, so the gain is ``sum_j w_j (1 + cos_ji) / 2 = (W + v . u_i) / 2``
    with ``W = sum_j w_j`` and ``v = sum_j w_j u_j``, up to rounding.

    Parameters
    ----------
    feats : Features
        The features (their unit rows ``u``), with ``shift=True``.
    w : numpy.ndarray, shape (N,)
        Non-negative coverage row weights.

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        ``bound_i >= `` the canonical (:func:`~tops_core.objective.lane_sum`)
        gain of token ``i``. The margin covers, with room: the BLAS dot
        product in the features' precision, in any order, with FMA or not
        (``|err| <= gamma_d |u_j| |u_i|``); clipping at ``-1`` (a row whose
        norm is ``1 + eta`` has ``cos >= -(1 + eta)^2``; zero rows have
        ``cos = 0`` exactly); the rounding of ``cos + 1``; the float64 products
        and canonical sum of ``N`` non-negative terms; and the float64
        evaluation of ``W`` and ``v . u_i`` here.
    """
    u = feats.unit
    n, d = u.shape
    unit = float(np.finfo(u.dtype).eps) / 2
    unit64 = float(np.finfo(np.float64).eps) / 2
    norms = np.empty(n)
    v = np.zeros(d)
    chunk = 4096  # float64 copies of the rows, a chunk at a time
    for s in range(0, n, chunk):
        u64 = u[s : s + chunk].astype(np.float64)
        norms[s : s + chunk] = np.sqrt(np.einsum("ij,ij->i", u64, u64))
        v += w[s : s + chunk] @ u64
    est = np.empty(n)
    for s in range(0, n, chunk):
        est[s : s + chunk] = u[s : s + chunk].astype(np.float64) @ v
    big_w = math.fsum(w)
    est += big_w
    live = norms > 0
    eta = float(np.abs(norms[live] - 1.0).max()) + 1e-12 if live.any() else 0.0
    a_w = float(w @ norms) * (1 + _gamma(n + 2, unit64))  # sum_j w_j |u_j|, rounded up
    slack = (
        _gamma(d + 2, unit) * (1 + eta) * a_w * norms  # BLAS dot products
        + (2 * eta + eta * eta) * big_w  # clipping at -1
        + _gamma(n + d + 4, unit64) * (big_w + a_w * norms)  # W, v and v . u_i in float64
        + 4 * unit64 * np.abs(est)
    )
    return (est + slack) * (0.5 * (1 + 2 * unit) * (1 + _gamma(n + 4, unit64)) * (1 + 8 * unit64))


def _coverage_of(rows: np.ndarray, m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Canonical coverage gains of candidates given their similarity rows (= columns)."""
    if fast_for(rows):
        lane_gain = gain_kernels().lane_gain
        return np.array([lane_gain(row, m, w) for row in rows], dtype=np.float64)
    return lane_sum(np.maximum(rows - m, 0.0) * w)


def _columns_match(feats: Features) -> bool:
    """Whether a product over a subset of columns gives the bits of the full rows.

    The half pass relies on it (and on the symmetry every path relies on); it
    holds for OpenBLAS's GEMM, whose per-entry accumulation does not depend on
    the block shape. Probed once per pass, at the cost of a few rows.
    """
    n = feats.n
    rows = np.arange(min(n, 2))
    return bool(np.array_equal(feats.take(rows)[:, n // 2 :], feats.product(rows, n // 2)))


def _half_bytes(feats: Features, block: int) -> int:
    """Bytes of the upper half of the similarity kept as row blocks of ``block`` rows."""
    n = feats.n
    return sum((min(s + block, n) - s) * (n - s) for s in range(0, n, block)) * feats.dtype.itemsize


def _half_pass(feats: Features, block: int):
    """The upper half of the similarity: tile ``b`` is rows ``b * block ..`` x columns ``b * block ..``.

    Each row block is multiplied by its trailing columns only (half the GEMM);
    with full rows instead when a column subset would change the bits (see
    :func:`_columns_match`).
    """
    from numba.typed import List

    half = _columns_match(feats)
    tiles = List()
    for start in range(0, feats.n, block):
        rows = np.arange(start, min(start + block, feats.n))
        tiles.append(feats.product(rows, start) if half else feats.take(rows)[:, start:].copy())
    return tiles


def select_features(scores, feats: Features, k, objective: Objective, batch: int = 16) -> Selection:
    """Lazy greedy on features: greedy's order and gains, bit for bit.

    Canonical gains are non-increasing bit for bit as the set grows (each term
    only shrinks and rounding is monotone), so stale gains bound fresh ones
    and the lazy pick equals greedy's, lowest index first on ties. Initial
    bounds come from :func:`coverage_bound` (``O(N d)``) for ``shift=True``;
    ``shift=False`` needs the full pass anyway, to refuse negative entries
    before answering, and it gives the exact initial gains.

    Gains are first evaluated from rows built ``batch`` at a time
    (:func:`_row_steps`). Once the rows a step provably needs (stale bounds
    above its best fresh gain) would take the rows built past ``N / 4``, one
    pass keeps the upper half of the similarity (at most :data:`PASS_BYTES`)
    and :func:`_pass_steps` finishes.
    """
    r_in, k = _checked_scores(scores, feats, k, objective, batch)
    if k == 0:  # the empty set (also for N = 0)
        return Selection.empty("lazy+features")
    state = _start(feats, r_in, objective, k)
    bound = top_sum(state.g_bound, k)
    if _row_steps(feats, state, k, batch):
        _pass_steps(feats, state, k)
    order = state.order
    g_rest = state.g_bound.copy()
    g_rest[order] = -np.inf
    bound = min(bound, math.fsum(state.g_gains) + top_sum(g_rest, k))
    value = objective.value_from(state.r, state.w, state.m, order, lambda: feats.take(order)[:, order])
    return certified_selection(order, state.gains, value, bound, "lazy+features", proven=k == feats.n)


def _checked_scores(scores, feats: Features, k, objective: Objective, batch: int) -> tuple[np.ndarray, int]:
    """Validated NumPy scores and budget (and the memory the selection may take)."""
    given = describe(scores)
    r_in = to_numpy(scores)
    if r_in.ndim != 1 or r_in.shape[0] != feats.n or r_in.dtype.kind not in "fiu":
        raise InvalidInputError(
            f"scores must be a real array of shape (N,) with N = {feats.n} (the features' "
            f"token count); got {given}"
        )
    if not np.isfinite(r_in).all():
        raise InvalidInputError(f"scores must be finite (no NaN or inf); got {given} with NaN or inf")
    k = check_budget(k, feats.n)
    objective.check_scores(r_in, given)
    r_abs = float(np.abs(r_in).max(initial=0))
    check_magnitudes([objective], None, r_abs, 1.0, feats.n, k)
    check_memory(f"Features with N = {feats.n} tokens", _working_bytes(feats, k, objective, batch))
    return r_in, k


@dataclass
class _LazyState:
    """Features mode's lazy-greedy state, which every phase reads and extends.

    ``f_bound`` / ``g_bound`` bound every candidate's gain of ``f`` / ``g``
    (exact where ``fresh_at`` is the current step); ``m`` is the running max,
    ``penalty`` the penalty column sums; the picks so far are
    ``order[:step]`` with their gains.
    """

    objective: Objective
    r: np.ndarray
    w: np.ndarray
    f_bound: np.ndarray
    g_bound: np.ndarray
    fresh_at: np.ndarray
    m: np.ndarray
    penalty: np.ndarray
    chosen: np.ndarray
    order: np.ndarray
    gains: np.ndarray
    g_gains: np.ndarray
    step: int = 0

    def pick(self, top: int, row: np.ndarray) -> None:
        """Record a pick and add its row (= its column) to the running max and the penalty."""
        self.order[self.step], self.gains[self.step] = top, self.f_bound[top]
        self.g_gains[self.step] = self.g_bound[top]
        self.chosen[top] = True
        np.maximum(self.m, row, out=self.m)
        if self.objective.redundancy:
            self.penalty += row
        self.step += 1

    def evaluated(self, tokens, cov: np.ndarray) -> None:
        """Store the fresh gains of ``tokens`` from their coverage gains ``cov`` at this step."""
        self.f_bound[tokens], self.g_bound[tokens] = self.objective.step_gains(
            self.r[tokens], cov, self.penalty[tokens]
        )
        self.fresh_at[tokens] = self.step


def _start(feats: Features, r_in: np.ndarray, objective: Objective, k: int) -> _LazyState:
    """The state at ``S = {}``: bounds on the initial gains (exact ones for ``shift=False``)."""
    n = feats.n
    r = r_in.astype(np.float64)
    w = objective.row_weights(r)
    fresh_at = np.full(n, -1, dtype=np.int64)
    if feats.shift:
        cov = coverage_bound(feats, w)
    else:
        cov, lowest = _initial_coverage(feats, w)
        if lowest < 0:
            raise InvalidInputError(
                f"sim must be non-negative; got {feats!r} whose similarity has negative entries. "
                "Use Features(x, shift=True)"
            )
        fresh_at[:] = 0
    f_bound, g_bound = objective.step_gains(r, cov, 0.0)
    return _LazyState(
        objective,
        r,
        w,
        f_bound,
        g_bound,
        fresh_at,
        m=np.zeros(n),
        penalty=np.zeros(n),
        chosen=np.zeros(n, dtype=bool),
        order=np.empty(k, dtype=np.int64),
        gains=np.empty(k),
        g_gains=np.empty(k),
    )


def _row_steps(feats: Features, st: _LazyState, k: int, batch: int) -> bool:
    """Lazy steps on rows built ``batch`` at a time; ``True`` when the one pass should finish them."""
    n = feats.n
    heap = [(-float(st.f_bound[i]), i) for i in range(n)]
    heapq.heapify(heap)
    may_switch = st.objective.coverage != 0 and fast_for(feats.unit)
    budget = n // 4
    rows_built = 0
    while st.step < k:
        best = None  # (f, -i, row) of the best fresh candidate at this step
        while True:
            top = heap[0][1]
            if st.fresh_at[top] == st.step:
                heapq.heappop(heap)
                break
            if may_switch and best is not None:
                need = np.count_nonzero((st.fresh_at != st.step) & ~st.chosen & (st.f_bound >= best[0]))
                if rows_built + need > budget:
                    may_switch = False  # one pass at most
                    if _half_bytes(feats, min(PASS_BLOCK, n)) <= PASS_BYTES:
                        return True
            popped = [heapq.heappop(heap)[1] for _ in range(min(batch, len(heap)))]
            todo = np.array([i for i in popped if st.fresh_at[i] != st.step], dtype=np.int64)
            rows = feats.take(todo)
            rows_built += todo.size
            st.evaluated(todo, _coverage_of(rows, st.m, st.w))
            for t, i in enumerate(todo):
                if best is None or (st.f_bound[i], -i) > best[:2]:
                    best = (st.f_bound[i], -i, rows[t])
            for i in popped:
                heapq.heappush(heap, (-float(st.f_bound[i]), i))
        st.pick(top, best[2] if best is not None and -best[1] == top else feats.take([top])[0])
    return False


def _working_bytes(feats: Features, k: int, objective: Objective, batch: int) -> float:
    """Memory :func:`select_features` may need beyond the features (a generous estimate).

    Per token: the heap (a Python tuple of a float and an int, about 120 bytes)
    and a dozen float64 state arrays; rows built ``batch`` at a time with
    their float64 temporaries; ``ROW_BLOCK`` rows for the exact initial gains
    (``shift=False``); the pass, at most :data:`PASS_BYTES`; and for the
    penalty the ``k`` chosen rows of the final value.
    """
    n, item = feats.n, feats.dtype.itemsize
    need = n * (120.0 + 12 * 8) + batch * n * (item + 3 * 8.0)
    need += min(PASS_BYTES, _half_bytes(feats, PASS_BLOCK))
    if not feats.shift:
        need += ROW_BLOCK * n * item + LANES * n * 8.0
    if objective.redundancy:
        need += k * n * item + k * k * 8.0
    return need


def _pass_steps(feats: Features, st: _LazyState, k: int) -> None:
    """Finish the selection after one pass over the similarity (the bounds so far stay valid).

    While most gains would be re-evaluated each step anyway (the lazy count
    ``#{bound >= pick}`` exceeds half the candidates, as early on with a
    shrinking noise floor), every gain is evaluated from the kept half
    similarity, in parallel. Then each token keeps its entries above the
    running max (at most :data:`PASS_BYTES` in all), the half similarity is
    dropped, and lazy greedy goes on from the kept entries (or, if they would
    not fit, from the half similarity's columns: :func:`_tile_steps`).
    """
    fk = feature_kernels()
    n = feats.n
    block = min(PASS_BLOCK, n)
    tiles = _half_pass(feats, block)
    half_bytes = _half_bytes(feats, block)
    idx_dtype = np.uint16 if n <= SMALL_INDEX_N else np.int32
    per_entry = np.dtype(idx_dtype).itemsize + feats.dtype.itemsize
    cov = np.empty(n)
    counts = np.empty(n, dtype=np.int64)
    row = np.empty(n, dtype=feats.dtype)
    while True:
        fk.dense_sweep(tiles, block, n, st.m, st.w, cov, counts)
        live = np.flatnonzero(~st.chosen)
        f, _ = st.objective.step_gains(st.r, cov, st.penalty)
        top = int(live[np.argmax(f[live])])  # first maximum: lowest index on ties
        need = int(np.count_nonzero(st.f_bound[live] >= f[top]))  # what lazy would evaluate
        st.evaluated(live, cov[live])
        m_swept = st.m.copy()
        fk.dense_row(tiles, block, n, top, row)
        st.pick(top, row)
        if st.step == k:
            return
        counts[st.chosen] = 0
        if 2 * need <= live.size:
            # Entries above the swept max (counted by the sweep) hold all those above m.
            if half_bytes + (int(counts.sum()) + n) * per_entry <= PASS_BYTES:
                break
            _tile_steps(tiles, block, feats, st, k)
            return
    store = _kept_entries(feats, tiles, block, counts, m_swept, st.chosen, idx_dtype)
    del tiles
    _store_steps(feats, st, k, store, need)


def _kept_entries(
    feats: Features, tiles, block: int, counts: np.ndarray, m_swept: np.ndarray, chosen: np.ndarray, idx_dtype
):
    """Each token's entries above the swept running max, as per-block index and value arrays.

    Going down from the last block, each block's entries are written and its
    tile is freed: the kept entries replace the half similarity, never beside it.
    """
    from numba.typed import List  # the [fast] extra: this path runs only with Numba

    n = feats.n
    blocks = len(tiles)
    starts = np.zeros(n, dtype=np.int64)
    idx_blocks = List([np.empty(0, dtype=idx_dtype)] * blocks)
    val_blocks = List([np.empty(0, dtype=feats.dtype)] * blocks)
    for cb in range(blocks - 1, -1, -1):
        c0, c1 = cb * block, min(cb * block + block, n)
        np.cumsum(counts[c0 : c1 - 1] + 1, out=starts[c0 + 1 : c1])  # one spare slot each
        size = int(counts[c0:c1].sum()) + c1 - c0
        idx_blocks[cb], val_blocks[cb] = np.empty(size, dtype=idx_dtype), np.empty(size, dtype=feats.dtype)
        feature_kernels().keep_block(
            tiles, block, n, cb, m_swept, chosen, starts, idx_blocks[cb], val_blocks[cb]
        )
        tiles[cb] = np.empty((0, 0), dtype=feats.dtype)
    return idx_blocks, val_blocks, starts, counts, block


def _store_steps(feats: Features, st: _LazyState, k: int, store, last: int) -> None:
    """Lazy greedy on the kept entries (compiled), from the state's step to ``k``."""
    fk = feature_kernels()
    obj = st.objective
    a, b, c = float(obj.relevance), float(obj.coverage), float(obj.redundancy)
    heap = np.flatnonzero(~st.chosen).astype(np.int64)
    fk.heapify(heap, st.f_bound)
    size = heap.shape[0]
    r_pos = np.maximum(st.r, 0.0)
    # Without the penalty the steps run in one call; with it each pick's full row is needed.
    for stop in [k] if not c else range(st.step + 1, k + 1):
        size, _, _, last = fk.lazy_steps(
            store,
            st.m,
            st.w,
            st.r,
            r_pos,
            a,
            b,
            c,
            st.penalty,
            st.f_bound,
            st.g_bound,
            st.fresh_at,
            heap,
            size,
            st.step,
            stop,
            last,
            st.order,
            st.gains,
            st.g_gains,
        )
        if c:
            st.penalty += feats.take([st.order[stop - 1]])[0]
        st.step = stop


def _tile_steps(tiles, block: int, feats: Features, st: _LazyState, k: int) -> None:
    """Lazy greedy reading columns of the kept half similarity, when kept entries would not fit.

    Each evaluation gathers one column (``O(N)``) and reduces it canonically.
    """
    fk = feature_kernels()
    n = feats.n
    lane_gain = gain_kernels().lane_gain
    row = np.empty(n, dtype=feats.dtype)
    heap = [(-float(st.f_bound[i]), int(i)) for i in np.flatnonzero(~st.chosen)]
    heapq.heapify(heap)
    while st.step < k:
        while True:
            top = heap[0][1]
            if st.fresh_at[top] == st.step:
                heapq.heappop(heap)
                break
            fk.dense_row(tiles, block, n, top, row)
            st.evaluated(top, lane_gain(row, st.m, st.w))
            heapq.heapreplace(heap, (-float(st.f_bound[top]), top))
        fk.dense_row(tiles, block, n, top, row)
        st.pick(top, row)
