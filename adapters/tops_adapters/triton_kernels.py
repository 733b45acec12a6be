"""Fused Triton kernels: the core's incremental greedy on a GPU, all ``k`` steps in one launch.

A whole selection is two launches, whatever ``k``:

1. ``initial_gains``, grid ``(B, ceil(N / BLOCK_I))``: the coverage gains at
   ``S = {}``, ``cov0_i = sum_j w_j s[j, i]``, the one dense pass, spread over
   the GPU.
2. ``greedy_steps``, grid ``(B,)``: one persistent program per batch row runs
   every step. Each step takes the argmax of ``a r + b cov - c penalty`` over
   the candidates (ties to the lowest index), records the pick, then finds
   the rows ``j`` whose running max ``m_j`` rose (``s[j, p] > m_j``),
   compacts them, and lowers every candidate's gain by those rows' terms
   ``w_j (min(s[j, i], m_j') - m_j)^+`` only: the core's
   :func:`~tops_core.solvers._kernels.greedy_steps` update. Early steps touch
   many rows, late steps a handful. Nothing returns to the host until the end.

Gains are kept in float64 whatever the input dtype. The certificate is the
core's ``Incremental`` one (online bound at ``S = {}`` and at the final set,
the final gains padded by the core's drift bound), computed by a few tensor
operations after the kernel (``certificate="greedy"`` / ``"lazy"``: the
core's ``Greedy`` / ``Lazy`` bound from gains the kernel stashes). On exactly
representable inputs (the tests' dyadic grid) every sum is exact, so order,
gains, value and bound equal the core's. Elsewhere the picks can differ only
at a step whose two best running gains are within twice the core's drift
bound (where the core re-decides on canonically summed gains): the kernel
flags such a batch row, and :func:`settle_near_ties` re-runs it exactly (one
read of the ``(B,)`` flags per call, never per step).

The kernels are built on first use, so ``TRITON_INTERPRET=1`` set before that
runs them on CPU tensors through Triton's interpreter (how CI tests them).
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from tops_adapters._native_solvers import NativeResult

__all__ = [
    "available",
    "incremental_greedy",
    "tops_rule_order",
    "settle_near_ties",
    "launch_count",
    "Blocks",
    "CERTIFICATES",
]

#: Kernel launches issued since import (the launch-count test and benchmark read it).
_LAUNCHES = [0]


def available() -> bool:
    """Whether Triton is installed (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def launch_count() -> int:
    """Triton kernel launches issued by this module so far."""
    return _LAUNCHES[0]


class Blocks:
    """Tile sizes (powers of two): ``vector`` entries per pass over N; ``rows`` x ``cols`` update tiles."""

    def __init__(self, vector: int = 1024, rows: int = 16, cols: int = 256) -> None:
        self.vector, self.rows, self.cols = vector, rows, cols

    @classmethod
    def for_size(cls, n: int) -> Blocks:
        """Defaults capped at ``N`` rounded up to a power of two (small problems, small tiles)."""
        top = 1 << max(n - 1, 1).bit_length()
        return cls(min(1024, top), min(16, top), min(256, top))


@functools.cache
def _kernels():
    """The JIT kernels (Triton is imported here, on first use)."""
    from tops_adapters import _triton_kernels

    return _triton_kernels.initial_gains, _triton_kernels.greedy_steps


@functools.cache
def _rule_kernels():
    """The TOPS rule's JIT kernels (Triton is imported here, on first use)."""
    from tops_adapters import _triton_kernels

    return _triton_kernels.tops_rule_coverage, _triton_kernels.tops_rule_steps


def _launch(kernel, grid, *args, **meta) -> None:
    """Launch ``kernel`` on ``grid`` and count it.

    Fused multiply-adds are off: they would round ``a * r + b * cov`` once
    where the core rounds twice, and move picks between near-equal gains.
    """
    _LAUNCHES[0] += 1
    kernel[grid](*args, enable_fp_fusion=False, **meta)


def _top_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the ``k`` largest positive entries per row (the core's ``top_sum``), float64."""
    return torch.topk(x, k, dim=-1, sorted=False).values.clamp(min=0).sum(-1)


#: Certificates the fused greedy can stash for, by the core method whose bound they reproduce.
CERTIFICATES = {"incremental": 0, "greedy": 1, "lazy": 2}


@torch.no_grad()
def incremental_greedy(
    objective,
    r: torch.Tensor,
    s: torch.Tensor,
    k: int,
    blocks: Blocks | None = None,
    certificate: str = "incremental",
    forced: torch.Tensor | None = None,
) -> NativeResult:
    """The core's ``Incremental`` on ``(B, N)`` scores and ``(B, N, N)`` similarities, fused.

    Parameters
    ----------
    objective : tops_core.Objective
        The objective; its weights select the kernel's terms.
    r, s : torch.Tensor
        Validated scores ``(B, N)`` and similarities ``(B, N, N)`` on one
        device, float32 or float64 (each read in its own dtype).
    k : int
        Budget, ``0 <= k <= N``.
    blocks : Blocks, optional
        Tile sizes (default :meth:`Blocks.for_size`); tests shrink them to
        run multi-block paths at small ``N``.
    certificate : {"incremental", "greedy", "lazy"}
        Whose upper bound to compute. The picks are the same (the core's
        greedy, lazy and incremental agree bit for bit); ``"greedy"`` and
        ``"lazy"`` stash ``(B, k + 1, N)`` float64 gains in the kernel and take
        their top-``k`` sums after it.
    forced : torch.Tensor, optional
        ``(B, k)`` int64 picks to follow instead of the argmax (a rule's
        order): the result is that order's gains, value and the core's
        certificate of a given order (its ``online_bound``, the
        ``"incremental"`` one); ``near_tie`` stays zero.

    Returns
    -------
    NativeResult
        ``order`` (B, k) int64, ``gains`` (B, k) float64 (the running gains at
        each pick), ``value`` and ``bound`` (B,) float64, and ``near_tie``
        (B,) int32, nonzero where a step's lead was within twice the core's
        drift bound (see :func:`settle_near_ties`); all on the device.
    """
    initial_gains, greedy_steps = _kernels()
    batch, n = r.shape
    dev = r.device
    mode = CERTIFICATES[certificate]
    a, bw, c, focus = objective.relevance, objective.coverage, objective.redundancy, objective.focus
    r, s = r.contiguous(), s.contiguous()
    blocks = blocks or Blocks.for_size(n)
    # One allocation per dtype (each allocation is a dispatched op): float64 state, int32 marks.
    cov, g0, gfin, m, pen, old, stale_f, stale_g = torch.zeros(
        (8, batch, n), dtype=torch.float64, device=dev
    ).unbind(0)
    chosen, changed = torch.zeros((2, batch, n), dtype=torch.int32, device=dev).unbind(0)
    f_gains, g_gains = torch.empty((2, batch, k), dtype=torch.float64, device=dev).unbind(0)
    order = torch.empty((batch, k), dtype=torch.int64, device=dev) if forced is None else forced.contiguous()
    out = torch.zeros((batch, 3), dtype=torch.float64, device=dev)
    near = torch.zeros((batch,), dtype=torch.int32, device=dev)
    if mode:
        stash = torch.empty((batch, k + 1, n), dtype=torch.float64, device=dev)
        up = torch.zeros((batch, k + 1), dtype=torch.float64, device=dev)  # up[0] = g({}) = 0
    else:
        stash = up = out  # never read or written
    flags = {"FOCUS": bool(focus), "HAS_COV": bool(bw)}
    _launch(
        initial_gains,
        (batch, -(-n // blocks.cols)),
        s,
        r,
        cov,
        g0,
        n,
        a,
        bw,
        focus,
        **flags,
        BLOCK_J=blocks.rows,
        BLOCK_I=blocks.cols,
    )
    _launch(
        greedy_steps,
        (batch,),
        s,
        r,
        cov,
        gfin,
        m,
        pen,
        old,
        chosen,
        changed,
        order,
        f_gains,
        g_gains,
        out,
        near,
        stash,
        up,
        stale_f,
        stale_g,
        order,
        n,
        k,
        a,
        bw,
        c,
        focus,
        **flags,
        HAS_PEN=bool(c),
        CERT=mode,
        FORCED=forced is not None,
        BLOCK=blocks.vector,
        ROWS=blocks.rows,
        BLOCK_I=blocks.cols,
    )
    upper, value, _ = out.unbind(1)
    if mode:
        # min over the stashed steps t of g(S_t) + the top-k sum of that step's gain bounds.
        bound = (up + _top_sum(stash, k)).amin(-1)
    else:
        # The core's certificate: min(top-k of g at S = {}, g(S) + top-k of the padded final gains);
        # chosen tokens are -inf in gfin, so with k = N the second term is g(S) itself.
        bound = torch.minimum(_top_sum(g0, k), upper + _top_sum(gfin, k))
    return NativeResult(order, f_gains, value, bound, near)


@torch.no_grad()
def tops_rule_order(
    rule, r: torch.Tensor, s: torch.Tensor, k: int, blocks: Blocks | None = None
) -> NativeResult:
    """The TOPS rule's pick order on ``(B, N)`` scores and ``(B, N, N)`` similarities, fused.

    Two launches whatever ``k``: the coverage after the seed, spread over the
    GPU, then one persistent program per batch row for the ``k - 1`` later
    steps, with coverage maintained incrementally (only the rows whose
    running max rose, as the core's fast path). On exactly representable
    inputs the order is the core's (the scores use the transcription's
    arithmetic, so every step's scores are its bits).

    Parameters
    ----------
    rule : tops_core.TOPSRule
        ``alpha``, ``lam`` and ``norm`` of the rule.
    r, s : torch.Tensor
        Validated scores and similarities (float32 or float64, one device).
    k : int
        Budget, ``0 <= k <= N``.
    blocks : Blocks, optional
        Tile sizes (default :meth:`Blocks.for_size`).

    Returns
    -------
    NativeResult
        ``order`` (B, k) int64 and ``near_tie`` (B,) int32 (rows to re-run
        exactly, see :func:`settle_near_ties`); ``gains``, ``value`` and
        ``bound`` are ``None`` (a rule's certificate comes from its reference
        objective, after the order).
    """
    batch, n = r.shape
    dev = r.device
    order = torch.empty((batch, k), dtype=torch.int64, device=dev)
    near = torch.zeros((batch,), dtype=torch.int32, device=dev)
    if k == 0:
        return NativeResult(order, None, None, None, near)
    coverage, steps = _rule_kernels()
    blocks = blocks or Blocks.for_size(n)
    # The core's "cols": cols[j, i] = F[i, j], so coverage terms and running maxima read rows.
    cols = s.transpose(-1, -2).contiguous()
    r = r.contiguous()
    c, m, old = torch.zeros((3, batch, n), dtype=torch.float64, device=dev).unbind(0)
    chosen, changed = torch.zeros((2, batch, n), dtype=torch.int32, device=dev).unbind(0)
    has_c = bool(rule.lam)
    if has_c:
        _launch(
            coverage, (batch, -(-n // blocks.cols)), cols, r, c, n, BLOCK_J=blocks.rows, BLOCK_I=blocks.cols
        )
    _launch(
        steps,
        (batch,),
        cols,
        r,
        c,
        m,
        old,
        chosen,
        changed,
        order,
        near,
        n,
        k,
        rule.alpha,
        rule.lam,
        MINMAX=rule.norm == "minmax",
        HAS_D=bool(rule.alpha),
        HAS_C=has_c,
        BLOCK=blocks.vector,
        ROWS=blocks.rows,
        BLOCK_I=blocks.cols,
    )
    return NativeResult(order, None, None, None, near)


def settle_near_ties(result: NativeResult, solve_row) -> NativeResult:
    """Replace the rows the kernel flagged as near-tied by the exact path's answer.

    One host read per call (the ``(B,)`` flags), never one per step; a row
    with no flag keeps the kernel's answer.

    Parameters
    ----------
    result : NativeResult
        A kernel's answer with its ``near_tie`` flags.
    solve_row : callable
        ``solve_row(b)`` returns the exact answer of batch row ``b`` (an
        object with NumPy ``order`` and, for objectives, ``gains``, ``value``
        and ``upper_bound``, a float or a 0-d tensor; ``order`` alone for
        rules).

    Returns
    -------
    NativeResult
        ``result`` with the flagged rows overwritten in place.
    """
    flagged = torch.nonzero(result.near_tie).flatten().tolist()
    for b in flagged:
        exact = solve_row(b)
        result.order[b] = torch.as_tensor(exact.order, dtype=torch.int64)
        if result.gains is not None:
            result.gains[b] = torch.as_tensor(exact.gains, dtype=torch.float64)
            result.value[b] = float(exact.value)
            result.bound[b] = exact.upper_bound
    return result
