"""Features mode: select from token features without ever holding the N x N similarity.

``select(scores, Features(x), k)`` maximises the same objective as
``select(scores, Features(x).dense(), k)``: similarity rows are built on demand
by BLAS in fixed blocks of rows, so memory stays ``O(N d + block N)``.
"""

from __future__ import annotations

import heapq

import numpy as np

from tops_core._validate import InvalidInputError, check_budget, describe
from tops_core.objective import LANES, Objective, lane_sum
from tops_core.selection import Selection
from tops_core.solvers._result import top_sum
from tops_core.solvers.incremental import fast_for, kernels

__all__ = ["Features"]

#: Rows of the similarity built per BLAS call in full passes (bounds the extra
#: memory to ``ROW_BLOCK * N`` floats).
ROW_BLOCK = 1024


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
        from tops_core._dispatch import to_numpy

        given = describe(features)
        x = to_numpy(features)
        if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "fiu":
            raise InvalidInputError(
                f"features must be a real array of shape (N, d) with N >= 1; got {given}"
            )
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise InvalidInputError(f"features must be finite (no NaN or inf); got {given} with NaN or inf")
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        self.unit = np.ascontiguousarray(x / np.where(norm == 0, 1, norm).astype(x.dtype))
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

    def take(self, indices) -> np.ndarray:
        """Similarity rows ``indices`` (any order), shape ``(len(indices), N)``.

        Always one matrix-matrix product (a single row is computed twice):
        BLAS's GEMM gives every row the same bits whatever rows it is batched
        with, while a matrix-vector product may not (checked in the tests).
        """
        idx = np.asarray(indices, dtype=np.int64)
        lone = idx.shape[0] == 1
        if lone:
            idx = np.repeat(idx, 2)
        block = self.unit[idx] @ self.unit.T
        np.clip(block, -1.0, 1.0, out=block)  # rounding can leave |cos| a hair above 1
        if self.shift:
            block += 1.0
            block *= 0.5
        return block[:1] if lone else block

    def blocks(self):
        """Yield ``(start, rows)`` over blocks of :data:`ROW_BLOCK` rows."""
        for start in range(0, self.n, ROW_BLOCK):
            yield start, self.take(np.arange(start, min(start + ROW_BLOCK, self.n)))

    def dense(self) -> np.ndarray:
        """The full ``(N, N)`` similarity this object stands for (for small N and tests)."""
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
            kernels().add_lanes(rows, start, w, zero_m, lanes)
        else:
            for t in range(rows.shape[0]):
                lanes[(start + t) % LANES] += rows[t] * w[start + t]
    cov = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    return cov, lowest


def _coverage_of(rows: np.ndarray, m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Canonical coverage gains of candidates given their similarity rows (= columns)."""
    if fast_for(rows):
        lane_gain = kernels().lane_gain
        return np.array([lane_gain(row, m, w) for row in rows], dtype=np.float64)
    return lane_sum(np.maximum(rows - m, 0.0) * w)


def select_features(scores, feats: Features, k, objective: Objective, batch: int = 16) -> Selection:
    """Lazy greedy on features: greedy's order, rows built ``batch`` at a time.

    Canonical gains are non-increasing bit for bit as the set grows (each term
    only shrinks and rounding is monotone), so stale gains bound fresh ones
    and the lazy pick equals greedy's, lowest index first on ties.
    """
    from tops_core._dispatch import to_numpy

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
    n = feats.n
    r = r_in.astype(np.float64)
    r_pos = np.maximum(r, 0.0)
    w = objective.row_weights(r)
    a, b, c = objective.relevance, objective.coverage, objective.redundancy
    cov, lowest = _initial_coverage(feats, w)
    if lowest < 0:
        raise InvalidInputError(
            f"sim must be non-negative; got {feats!r} whose similarity has negative entries. "
            "Use Features(x, shift=True)"
        )
    f_bound = a * r + b * cov
    g_bound = a * r_pos + b * cov
    bound = top_sum(g_bound, k)
    m = np.zeros(n, dtype=np.float64)
    penalty = np.zeros(n, dtype=np.float64)
    fresh_at = np.zeros(n, dtype=np.int64)
    heap = [(-float(f_bound[i]), i) for i in range(n)]
    heapq.heapify(heap)
    order = np.empty(k, dtype=np.int64)
    gains = np.empty(k, dtype=np.float64)
    upper_value = 0.0
    pending = None  # the last pick, whose row rides along with the next refresh
    for step in range(k):
        while True:
            top = heap[0][1]
            if fresh_at[top] == step:
                heapq.heappop(heap)
                break
            popped = [heapq.heappop(heap)[1] for _ in range(min(batch, len(heap)))]
            todo = np.array([i for i in popped if fresh_at[i] != step], dtype=np.int64)
            if pending is not None:
                rows = feats.take(np.concatenate([[pending], todo]))
                _add(rows[0], m, penalty, c)
                rows, pending = rows[1:], None
            else:
                rows = feats.take(todo)
            cov_now = _coverage_of(rows, m, w)
            for t, i in enumerate(todo):
                f = a * r[i] + b * cov_now[t]
                if c:
                    f = f - c * penalty[i]
                f_bound[i], g_bound[i] = f, a * r_pos[i] + b * cov_now[t]
                fresh_at[i] = step
            for i in popped:
                heapq.heappush(heap, (-float(f_bound[i]), i))
        if pending is not None:  # the pick was already fresh: apply the last one alone
            _add(feats.take([pending])[0], m, penalty, c)
            pending = None
        order[step] = top
        gains[step] = f_bound[top]
        upper_value += g_bound[top]
        g_bound[top] = -np.inf
        pending = top
    bound = min(bound, upper_value + top_sum(g_bound, k))
    value = _value(feats, r, w, order, objective)
    bound = max(bound, value)
    closes = bound - value <= 1e-12 * max(1.0, abs(bound))
    return Selection(
        indices=np.sort(order), order=order, gains=gains, value=value, upper_bound=bound,
        method="lazy+features", optimal=bool(closes or k == n),
    )


def _add(row: np.ndarray, m: np.ndarray, penalty: np.ndarray, c: float) -> None:
    """Add a picked token: its row (= its column) raises the running max."""
    np.maximum(m, row, out=m)
    if c:
        penalty += row


def _value(feats: Features, r: np.ndarray, w: np.ndarray, order: np.ndarray, objective: Objective) -> float:
    """``f(S)`` by its definition, from the selected rows only (sim is symmetric)."""
    import math

    if order.size == 0:
        return 0.0
    rows = feats.take(order)
    terms = []
    if objective.relevance:
        terms.append(objective.relevance * math.fsum(r[order]))
    if objective.coverage:
        terms.append(objective.coverage * math.fsum(w * rows.max(axis=0).astype(np.float64)))
    if objective.redundancy and order.size > 1:
        block = rows[:, order].astype(np.float64)
        terms.append(-objective.redundancy * math.fsum(block[np.triu_indices(order.size, 1)]))
    return float(math.fsum(terms))
