"""On-device selection loops, written once for PyTorch and MLX.

Every function takes an ``ops`` object (``TorchOps`` in :mod:`tops_adapters.torch`,
``MlxOps`` in :mod:`tops_adapters.mlx`) that supplies the few calls whose
spelling differs between the frameworks; everything else is plain operator
arithmetic that both share. Inputs are batched and already validated:
``r`` of shape ``(B, N)`` and ``s`` of shape ``(B, N, N)`` in the compute dtype.

The loops keep all state on the device. They never turn an array into a
Python value (no ``.item()``, ``.cpu()``, ``.tolist()``, ``bool(tensor)``), so
a GPU runs the ``k`` steps without waiting on the host; data-dependent
branches are ``where`` masks. Each mirrors the NumPy core step for step
(same operations in the same order), so on exactly representable inputs the
pick order is the core's, ties going to the lowest index (``argmax`` returns
the first maximum in both frameworks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tops_core.objective import Objective
from tops_core.registry import method_of

__all__ = ["NativeResult", "certify_order", "native_plan", "objective_greedy", "rule_order"]

INF = float("inf")


@dataclass(frozen=True)
class NativeResult:
    """Batched raw answer: arrays on the device, ``(B, k)`` and ``(B,)``."""

    order: Any
    gains: Any
    value: Any
    bound: Any
    #: ``(B,)`` flags of a fused kernel: nonzero where a step was within the drift bound of a tie.
    near_tie: Any = None


# ---------------------------------------------------------------- objective
def _row_weights(ops, r, focus: float):
    """``w_j = (1 - beta) + beta * r_j / mean(r)`` per row (ones if beta = 0 or mean = 0)."""
    if focus == 0:
        return ops.ones_like(r)
    mean = ops.asum(r) / r.shape[-1]
    safe = ops.where(mean == 0, 1.0, mean)
    return ops.where(mean[:, None] == 0, 1.0, (1.0 - focus) + focus * (r / safe[:, None]))


class _ObjectiveState:
    """The core's ``ObjectiveState`` for a batch: running max ``m``, penalty sums, ``g(S)``."""

    def __init__(self, ops, objective, r, s) -> None:
        self.ops = ops
        self.a, self.b, self.c = objective.relevance, objective.coverage, objective.redundancy
        self.focus = objective.focus
        self.r, self.s = r, s
        self.r_pos = ops.relu(r)
        self.w = _row_weights(ops, r, objective.focus)
        # cols[b, i, :] = s[b, :, i]: the coverage token i gives every token j.
        self.cols = ops.transpose(s) if self.b else None
        batch, n = r.shape
        self.m = ops.zeros((batch, n), r.dtype)
        self.penalty = ops.zeros((batch, n), r.dtype)
        self.upper = ops.zeros((batch,), ops.acc)

    def gains(self):
        """Gains of ``f`` and of its monotone part ``g`` for every token, ``(B, N)`` each.

        Terms with a zero weight are skipped (each is a kernel launch on a GPU);
        the kept ones are combined in the core's order, so values are unchanged.
        """
        ops = self.ops
        f = g = None
        if self.a:
            f, g = self.a * self.r, self.a * self.r_pos
        if self.b:
            # The dense O(N^2) step: sum_j w_j * max(0, s[j, i] - m_j) for every i.
            cov = ops.coverage(self.cols, self.m, self.w)
            if self.b != 1:
                cov = self.b * cov
            f, g = (cov, cov) if f is None else (f + cov, g + cov)
        if f is None:
            f = g = ops.zeros(self.r.shape, self.r.dtype)
        if self.c:
            f = f - self.c * self.penalty
        return f, g

    def add(self, p, g_gain) -> None:
        """Add token ``p[b]`` to row ``b``'s set."""
        ops = self.ops
        self.upper = self.upper + ops.to_acc(g_gain)
        if self.b:
            self.m = ops.maximum(self.m, ops.row(self.cols, p))
        if self.c:
            self.penalty = self.penalty + ops.row(self.s, p)

    def value(self, order):
        """``f(set(order))`` by the definition, in the accumulation dtype, ``(B,)``.

        Uses the running max ``m`` of the finished set, so call it after the last ``add``.
        """
        ops = self.ops
        batch = self.r.shape[0]
        value = ops.zeros((batch,), ops.acc)
        k = order.shape[-1]
        if k == 0:
            return value
        r = ops.to_acc(self.r)
        if self.a:
            value = value + self.a * ops.asum(ops.take(r, order))
        if self.b:
            # The core evaluates f in float64 with weights from the float64 scores.
            w = _row_weights(ops, r, self.focus)
            value = value + self.b * ops.asum(w * ops.to_acc(self.m))
        if self.c and k > 1:
            block = ops.to_acc(ops.submatrix(self.s, order))
            value = value - self.c * ops.asum(ops.asum(block * ops.upper_mask(k)))
        return value


class _OnlineBound:
    """``min_t g(S_t) + (sum of the k largest positive g-gain bounds at S_t)``, computed in chunks.

    Each step only stashes its masked gain bounds and ``g(S_t)``; the top-k
    sums run on a stack of steps at once (one ``topk`` per chunk instead of
    several small kernels per step), to the same numbers.
    """

    CHUNK = 64

    def __init__(self, ops, batch: int, k: int) -> None:
        self.ops, self.k = ops, k
        self.bound = ops.full((batch,), INF, ops.acc)
        self.gains, self.uppers = [], []

    def add(self, upper, masked_gains) -> None:
        self.gains.append(masked_gains)
        self.uppers.append(upper)
        if len(self.gains) == self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        ops = self.ops
        if self.gains:
            tops = ops.topk_sum(ops.stack(self.gains, 0, None), self.k)  # (B, T, N) -> (B, T)
            best = ops.amin(ops.stack(self.uppers, 0, None) + tops)
            self.bound = ops.minimum(self.bound, best)
            self.gains, self.uppers = [], []

    def result(self):
        self._flush()
        return self.bound


def objective_greedy(ops, objective, r, s, k: int, *, lazy: bool) -> NativeResult:
    """Greedy on the objective with every gain fresh at every step (batched).

    ``lazy=False`` reproduces the core's ``Greedy`` including its certificate
    (the online bound from the fresh gains before each step and after the
    last). ``lazy=True`` reproduces the core's ``Lazy``: the same picks (lazy
    greedy's pick is greedy's), and the certificate from the stale bounds the
    heap would hold. A stale entry ``i`` is refreshed at a step exactly when
    its key ``(u_i, -i)`` exceeds the pick's ``(gain, -pick)`` (the heap pops
    every such key before the pick surfaces), so the stale array, and with it
    the bound, is the core's.
    """
    state = _ObjectiveState(ops, objective, r, s)
    batch, n = r.shape
    index = ops.arange(n)[None, :]
    chosen = ops.zeros((batch, n), ops.bool)
    bound = _OnlineBound(ops, batch, k)
    stale_f = stale_g = None
    order, gains = [], []
    for t in range(k):
        f, g = state.gains()
        p = ops.argmax(ops.where(chosen, -INF, f))
        fp, gp = ops.pick(f, p), ops.pick(g, p)
        is_p = index == p[:, None]
        if lazy:
            if t == 0:
                stale_f, stale_g = f, g
                bound.add(state.upper, g)
            else:
                above = (stale_f > fp[:, None]) | ((stale_f == fp[:, None]) & (index < p[:, None]))
                refresh = (above | is_p) & ~chosen
                stale_f = ops.where(refresh, f, stale_f)
                stale_g = ops.where(refresh, g, stale_g)
        else:
            bound.add(state.upper, ops.where(chosen, -INF, g))
        order.append(p)
        gains.append(fp)
        state.add(p, gp)
        chosen = chosen | is_p
        if lazy:
            bound.add(state.upper, ops.where(chosen, -INF, stale_g))
        ops.step(state.m, state.penalty, state.upper, chosen, stale_f, stale_g, p, fp, *bound.gains[-1:])
    if k == 0:
        bound = ops.zeros((batch,), ops.acc)
    else:
        if not lazy:
            _, g = state.gains()
            bound.add(state.upper, ops.where(chosen, -INF, g))
        bound = bound.result()
    order = ops.stack(order, batch, ops.index)
    return NativeResult(order, ops.stack(gains, batch, r.dtype), state.value(order), bound)


def certify_order(ops, evaluator, r, s, order) -> NativeResult:
    """Gains, value and online bound of a rule's ``order`` under ``evaluator`` (batched).

    Mirrors the core's ``gains_along`` and ``online_bound``: the bound is the
    smaller of ``sum of the k largest g-gains at the empty set`` and
    ``g(S) + sum of the k largest g-gains at the final set``. The gains along
    the order need no loop: the running max before pick ``t`` is an exclusive
    cumulative max over the picked columns, and the penalty before pick ``t``
    a masked column sum of the picked block (``O(kN)`` in a few kernels).
    """
    state = _ObjectiveState(ops, evaluator, r, s)
    batch, n = r.shape
    k = order.shape[-1]
    _, g0 = state.gains()
    bound = ops.topk_sum(g0, k)
    if k == 0:
        return NativeResult(order, ops.zeros((batch, 0), r.dtype), state.value(order), bound)
    f = g = None
    if state.a:
        f, g = state.a * ops.take(r, order), state.a * ops.take(state.r_pos, order)
    if state.b:
        picked = ops.rows(state.cols, order)  # (B, k, N): picked[b, t, j] = s[b, j, order[b, t]]
        running = ops.cummax(picked)
        before = ops.concat_steps(ops.zeros((batch, 1, n), r.dtype), running[:, :-1, :])
        cov = ops.asum(ops.relu(picked - before) * state.w[:, None, :])
        if state.b != 1:
            cov = state.b * cov
        f, g = (cov, cov) if f is None else (f + cov, g + cov)
        state.m = running[:, -1, :]
    if f is None:
        f = g = ops.zeros((batch, k), r.dtype)
    if state.c:
        block = ops.submatrix(s, order)  # block[b, u, t] = s[p_u, p_t]
        f = f - state.c * ops.asum(ops.swap_last(block * ops.cast(ops.upper_mask(k), s.dtype)))
        state.penalty = ops.asum(ops.swap_last(ops.rows(s, order)))
    state.upper = ops.asum(ops.to_acc(g))
    chosen = ops.any_equal(order, n)
    _, g1 = state.gains()
    bound = ops.minimum(bound, state.upper + ops.topk_sum(ops.where(chosen, -INF, g1), k))
    ops.step(f, bound)
    return NativeResult(order, f, state.value(order), bound)


# -------------------------------------------------------------------- rules
def _normalize(ops, x, mask, count: int, how: str):
    """The core's ``normalize`` over the candidates ``mask`` (``count`` of them per row)."""
    if how == "mean":
        mean = ops.asum(ops.where(mask, x, 0.0)) / count
        safe = ops.where(mean == 0, 1.0, mean)
        return ops.where(mean[:, None] == 0, 0.0, x / safe[:, None])
    lo = ops.amin(ops.where(mask, x, INF))
    span = ops.amax(ops.where(mask, x, -INF)) - lo
    safe = ops.where(span == 0, 1.0, span)
    return ops.where(span[:, None] == 0, 0.0, (x - lo[:, None]) / safe[:, None])


def _tops_rule(ops, rule, r, s, k):
    n = r.shape[-1]
    index = ops.arange(n)[None, :]
    p = ops.argmax(r)
    order = [p]
    chosen = index == p[:, None]
    cols = ops.transpose(s)
    m = ops.row(cols, p)
    for t in range(1, k):
        cand = ~chosen
        score = _normalize(ops, r, cand, n - t, rule.norm)
        if rule.alpha:
            score = score + rule.alpha * _normalize(ops, 1.0 - m, cand, n - t, rule.norm)
        if rule.lam:
            # c_i = sum over candidates j of max(0, s[i, j] - m_j): O(N^2) per step.
            cov = ops.coverage(s, m, ops.cast(cand, s.dtype))
            score = score + rule.lam * _normalize(ops, cov, cand, n - t, rule.norm)
        p = ops.argmax(ops.where(chosen, -INF, score))
        order.append(p)
        chosen = chosen | (index == p[:, None])
        m = ops.maximum(m, ops.row(cols, p))
        ops.step(m, chosen, p)
    return order


def _divprune(ops, rule, r, s, k):
    n = r.shape[-1]
    index = ops.arange(n)[None, :]
    if rule.seed == "relevance":
        p = ops.argmax(r)
    else:
        # argmax_i min_{j != i} (1 - s[i, j]) == argmin_i max_{j != i} s[i, j], without rounding 1 - s.
        off_diag = ops.where(ops.eye(n), -INF, s)
        p = ops.argmin(ops.amax(off_diag))
    order = [p]
    chosen = index == p[:, None]
    cols = ops.transpose(s)
    m = ops.row(cols, p)
    for _ in range(1, k):
        p = ops.argmin(ops.where(chosen, INF, m))
        order.append(p)
        chosen = chosen | (index == p[:, None])
        m = ops.maximum(m, ops.row(cols, p))
        ops.step(m, chosen, p)
    return order


def _dpp(ops, rule, r, s, k):
    """Fast greedy MAP (incremental Cholesky), as the core's ``dpp_greedy_map``."""
    batch, n = r.shape
    index = ops.arange(n)[None, :]
    if rule.quality == "minmax":
        q = _normalize(ops, r, index >= 0, n, "minmax")
    else:
        q = r
    residual = q * ops.diagonal(s) * q
    chol = ops.zeros((batch, max(k - 1, 1), n), r.dtype)
    chosen = ops.zeros((batch, n), ops.bool)
    order = []
    for t in range(k):
        j = ops.argmax(ops.where(chosen, -INF, residual))
        order.append(j)
        chosen = chosen | (index == j[:, None])
        if t == k - 1:
            break
        res_j = ops.pick(residual, j)
        row = ops.pick(q, j)[:, None] * ops.row(s, j) * q
        if t:
            done = chol[:, :t, :]
            row = row - ops.vecmat(ops.col(done, j), done)
        positive = res_j > 0
        e = ops.where(positive[:, None], row / ops.sqrt(ops.where(positive, res_j, 1.0))[:, None], 0.0)
        chol = ops.set_row(chol, t, e)
        residual = residual - e * e
        ops.step(residual, chol, chosen, j)
    return order


def _topk(ops, rule, r, s, k):
    return ops.stable_topk_order(r, k)


#: The on-device loop of every rule whose registry entry names one (``Method.native``).
RULE_LOOPS = {"tops_rule": _tops_rule, "divprune": _divprune, "dpp": _dpp, "topk": _topk}


def rule_order(ops, rule, r, s, k: int):
    """Pick order ``(B, k)`` of a rule with a native loop (see :data:`RULE_LOOPS`)."""
    batch = r.shape[0]
    if k == 0:
        return ops.zeros((batch, 0), ops.index)
    order = RULE_LOOPS[rule.name](ops, rule, r, s, k)
    if isinstance(order, list):
        order = ops.stack(order, batch, ops.index)
    return order


def native_plan(objective, solver):
    """``(name, lazy)`` for a native run, or ``None`` when only the core has the method.

    Read from :mod:`tops_core.registry` (each method's ``native`` loop).
    ``auto`` (the core's :class:`~tops_core.Incremental`) runs as greedy on the
    device: the dense loop computes every gain each step anyway, so it reports
    greedy's (tightest) certificate and the name ``"greedy"``; the answer is
    the same as the core's ``auto``.
    """
    entry = method_of(solver if isinstance(objective, Objective) else objective)
    if entry is None or entry.native is None:
        return None
    return entry.native, entry.native == "lazy"
