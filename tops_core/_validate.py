"""Every input check of tops-prune and its wording, in one place.

Messages name the argument, the requirement and what was given (shape, dtype,
device), never the data itself.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import threading
import weakref
from collections.abc import Iterable
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from tops_core._threads import split_map, threads_for

__all__ = [
    "InvalidInputError",
    "check_array_kind",
    "check_budget",
    "check_choice",
    "check_magnitudes",
    "check_memory",
    "check_problem",
    "check_weight",
    "describe",
    "short",
]

#: Longest rendering of a given value in a message (the value is cut, never the message's sense).
SHORT = 60


class InvalidInputError(ValueError, TypeError):
    """Bad input to tops-prune.

    A subclass of both :class:`ValueError` and :class:`TypeError`, so either
    ``except`` clause catches it.
    """


def describe(x: object) -> str:
    """Describe an array for an error message: shape, dtype and device, never data."""
    from tops_core._dispatch import adapter_for

    adapter = adapter_for(x)
    if adapter is not None:
        return adapter.describe(x)
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"shape {tuple(shape)}, dtype {dtype}"
    return f"type {type(x).__name__}"


def short(value: object) -> str:
    """``repr(value)`` cut to :data:`SHORT` characters: messages stay short whatever was given."""
    if isinstance(value, (str, int, float, complex, bool, type(None), np.generic)):
        try:
            text = repr(value)
        except ValueError:  # an int past Python's digit limit for str()
            text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<unprintable>"
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= SHORT else text[: SHORT - 3] + "..."


def check_array_kind(name: str, x: object) -> None:
    """Reject framework arrays that hold no readable dense data (meta, sparse, nested, quantized).

    Checked by attribute, so no framework is imported; other frameworks pass.
    """
    from tops_core._dispatch import framework_of

    if framework_of(x) != "torch":
        return
    import torch

    assert isinstance(x, torch.Tensor)  # framework_of said so; narrows the type
    if x.is_meta or x.layout is not torch.strided or x.is_nested or x.is_quantized:
        kind = (
            "a meta tensor (it holds no data)"
            if x.is_meta
            else "a nested tensor"
            if x.is_nested
            else "a quantized tensor"
            if x.is_quantized
            else f"a tensor with layout {x.layout}"
        )
        raise InvalidInputError(
            f"{name} must be a dense (strided) tensor with data; got {kind}: "
            f"torch.Tensor with shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}. "
            "Convert it with .to_dense() or materialise it first"
        )


def available_memory() -> int | None:
    """Bytes of memory available now: ``MemAvailable`` on Linux, else physical memory; ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _size(nbytes: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} bytes"


#: Allocations below this many bytes are not checked (reading /proc costs more than they risk).
MEMORY_CHECK_FROM = 64 * 2**20


def check_memory(what: str, nbytes: float) -> None:
    """Refuse, before allocating, working memory of ``nbytes`` that is not available.

    Parameters
    ----------
    what
        What needs it, naming the argument (e.g. ``"sim of N = 100000 tokens"``).
    nbytes
        Bytes the path would allocate beyond its inputs.
    """
    if nbytes < MEMORY_CHECK_FROM:
        return
    free = available_memory()
    if free is not None and nbytes > free:
        raise InvalidInputError(
            f"{what} would need {_size(nbytes)} of working memory; {_size(free)} is available. "
            "Use fewer tokens, Features(x) for long inputs, or a machine with more memory"
        )


def pow2_scale(x: np.ndarray, axis=None) -> np.ndarray:
    """``x`` times the power of two that brings ``max |x|`` (along ``axis``) into ``[0.5, 1)``.

    Sums of ``N`` such values cannot overflow and subnormal inputs regain full
    precision, while every ratio of them keeps its bits (scaling by a power of
    two is exact unless it underflows).
    """
    top = np.abs(x).max(axis=axis, keepdims=axis is not None, initial=0.0)
    _, exponent = np.frexp(top)
    return np.ldexp(x, -exponent)


#: Largest value the objective's terms may reach: float64's maximum over 2**10 leaves
#: headroom for the certificate's sums and the solvers' rounding slack.
LARGEST = float(np.finfo(np.float64).max) / 1024


def check_magnitudes(evaluators, rule, r_abs: float, s_max: float, n: int, k: int) -> None:
    """Refuse scores and sim whose objective terms float64 cannot carry (they would overflow).

    The bound on every quantity a solver forms, for each term in use: ``N * max|r|``
    (bonus sums), ``N * max s`` (coverage sums, with the greedy's rounding
    slack), ``k * N * max s`` (penalty sums), each also times its weight when
    the weight exceeds 1; for :class:`~tops_core.TOPSRule`, ``alpha`` and ``lam``
    times ``N`` (a mean-normalised term of non-negative values is at most ``N``). Rules sum
    ``N`` entries of ``sim`` (coverage); ``DPP(quality="raw")`` forms ``r^2 s``.
    """
    eps = float(np.finfo(np.float64).eps)
    slack = 1.0 + 8 * eps * (4.0 * n * k + n + 16)
    with np.errstate(over="ignore", invalid="ignore"):
        terms = [n * s_max] if rule is not None else []
        for name in ("alpha", "lam"):  # TOPSRule: weight times a normalised term (at most N)
            terms.append(getattr(rule, name, 0.0) * n * max(1.0, s_max))
        if getattr(rule, "quality", None) == "raw":
            terms.append(r_abs * r_abs * s_max)
        for obj in evaluators:  # the sums, before and after weighting (a weight may be < 1)
            for weight, raw in (
                (obj.relevance, n * r_abs),
                (obj.coverage, n * s_max * slack),
                (obj.redundancy, k * n * s_max),
            ):
                if weight:
                    terms.append(max(1.0, weight) * raw)
        reach = max(terms, default=0.0)
    if not reach <= LARGEST:
        raise InvalidInputError(
            f"scores and sim are too large for float64 arithmetic: the objective's terms reach "
            f"about {reach:.3g} (weights times N = {n} times max |scores| = {r_abs:.3g} or max "
            f"sim = {s_max:.3g}), above {LARGEST:.3g}. Rescale scores or sim (or the weights)"
        )


def check_weight(name: str, value: object, *, upper: float | None = None) -> float:
    """Check a non-negative finite real weight (optionally ``<= upper``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a real number; got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        value = math.inf
    if not np.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"0 <= {name} <= {upper}" if upper is not None else f"{name} >= 0"
        raise InvalidInputError(f"{name} must be finite with {bound}; got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``; suggest the closest name if not."""
    choices = list(choices)
    if isinstance(value, str) and value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value[:SHORT], choices, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    listed = ", ".join(repr(c) for c in choices)
    raise InvalidInputError(f"{name} must be one of {listed}; got {short(value)}.{hint}")


def check_budget(k: object, n: int) -> int:
    """Check the budget ``k``: an integer (not bool) with ``0 <= k <= n``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidInputError(
            f"k must be an integer with 0 <= k <= N = {n}; got {type(k).__name__}"
            + (f" {short(k)}" if isinstance(k, (str, bool, float, complex, np.generic)) else "")
        )
    k = int(k)
    if k < 0 or k > n:
        raise InvalidInputError(f"k must satisfy 0 <= k <= N = {n}; got k = {short(k)}")
    return k


def _as_real_array(name: str, x: np.ndarray, given: str) -> tuple[np.ndarray, float, float]:
    """Return ``x`` as floats and its extremes, after checking it is real and finite."""
    if x.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name} must hold real numbers (a float or integer dtype); got {given}")
    if x.dtype.kind in "iu":
        x = x.astype(np.float64)
    if not x.size:
        return x, 0.0, 0.0
    # Two streaming reductions instead of an elementwise isfinite (and a second
    # pass for the sign): min and max propagate NaN, and any inf shows in one of them.
    lo, hi = _extremes(x)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InvalidInputError(f"{name} must be finite (no NaN or inf); got {given} with NaN or inf")
    return x, float(lo), float(hi)


def _extremes(x: np.ndarray) -> tuple[float, float]:
    """``(x.min(), x.max())``; a large ``x`` in slabs along its first long axis, one per thread."""
    parts = threads_for(x.size)
    axis = next((a for a, length in enumerate(x.shape) if length >= parts), None)
    if parts == 1 or axis is None:
        return x.min(), x.max()
    slabs = np.array_split(x, parts, axis=axis)
    found = split_map(lambda slab: (slab.min(), slab.max()), slabs)
    # NaN must survive the combination as it survives min and max (Python's min drops it).
    return np.min([lo for lo, _ in found]), np.max([hi for _, hi in found])


# Exact-symmetry answers per array object within one ``select`` call: validation,
# the solver and the certificate each need it, and inputs are never modified.
_SYMMETRY_MEMO: ContextVar[dict | None] = ContextVar("tops_symmetry_memo", default=None)


@contextmanager
def symmetry_memo():
    """Remember :func:`exactly_symmetric` answers (per array object) inside the block."""
    token = _SYMMETRY_MEMO.set({})
    try:
        yield
    finally:
        _SYMMETRY_MEMO.reset(token)


def known_symmetry(a: np.ndarray) -> bool | None:
    """The remembered :func:`exactly_symmetric` answer for ``a`` in this call, or ``None``."""
    memo = _SYMMETRY_MEMO.get()
    if memo is not None and id(a) in memo and memo[id(a)][0]() is a:
        return memo[id(a)][1]
    return None


def _remember(a: np.ndarray, symmetric: bool) -> bool:
    """Record ``a``'s exact symmetry for the rest of the call (when a memo is live); return it."""
    memo = _SYMMETRY_MEMO.get()
    if memo is not None:
        # A weak reference: temporaries (contiguous copies) are not kept alive,
        # and a dead entry whose id was reused never matches.
        memo[id(a)] = (weakref.ref(a), symmetric)
    return symmetric


def spot_asymmetry(a: np.ndarray, rows: int = 32) -> bool:
    """Whether the 2-D ``a`` is already seen asymmetric in its first ``rows`` rows (then remembered).

    A probe of ``rows x N`` entries against the matching columns, before a
    caller bets on symmetry: ``True`` proves ``a`` is not symmetric, ``False``
    proves nothing.
    """
    if a.shape[0] != a.shape[1]:
        return True
    if np.array_equal(a[:rows], a[:, :rows].T):
        return False
    _remember(a, False)
    return True


def exactly_symmetric(a: np.ndarray) -> bool:
    """Whether the 2-D ``a`` equals its transpose exactly, tile by tile (the first miss stops)."""
    known = known_symmetry(a)
    if known is not None:
        return known
    return _remember(a, a.shape[0] == a.shape[1] and _blocks_equal_transposed(a))


# NumPy's blocks compare a block with its mirror through a strided view (not vectorised). Compiled
# tile kernels were measured against them at N = 2880 float32: faster on a 2-core Xeon (5.0 vs 7.2
# ms, a 16 x 16 mirror transposed into L1) but 2-5x slower on a 2-core AMD EPYC (12-31 ms vs 6.1
# ms, every tile shape tried), so the blocks stay: the best worst case. A large ``a`` splits its
# block rows across threads (interleaved: the triangle's rows shrink; 1.7x on 2 cores); the first
# miss in any thread stops them all.
def _blocks_equal_transposed(a: np.ndarray) -> bool:
    n = a.shape[0]
    block = 128 if n <= 768 else 256  # measured: 128 wins while a fits in L2, 256 beyond
    starts = range(0, n, block)
    parts = threads_for(a.size)
    miss = threading.Event()

    def band_equal(band: range) -> bool:
        for i0 in band:
            for j0 in range(i0, n, block):
                if miss.is_set():
                    return False
                if not np.array_equal(
                    a[i0 : i0 + block, j0 : j0 + block], a[j0 : j0 + block, i0 : i0 + block].T
                ):
                    miss.set()
                    return False
        return True

    return all(split_map(band_equal, [starts[p::parts] for p in range(min(parts, len(starts)))]))


def _symmetric(sim: np.ndarray, lo: float, hi: float, block: int = 256) -> bool:
    """Symmetric within 16 eps of the largest entry (rounding), block by block.

    ``lo``, ``hi`` are the extreme entries (already computed by validation).
    Blocks keep the temporaries small; exactly equal pairs need no arithmetic.
    """
    if sim.ndim == 2 and exactly_symmetric(sim):
        return True
    tol = 16 * np.finfo(sim.dtype).eps * max(1.0, abs(lo), abs(hi))
    n = sim.shape[-1]
    for i0 in range(0, n, block):
        for j0 in range(i0, n, block):
            a = sim[..., i0 : i0 + block, j0 : j0 + block]
            b = np.swapaxes(sim[..., j0 : j0 + block, i0 : i0 + block], -1, -2)
            if not np.array_equal(a, b) and np.abs(a - b).max(initial=0.0) > tol:
                return False
    return True


def check_problem_extremes(
    scores: object,
    sim: object,
    k: object,
    *,
    need_symmetric: bool = False,
    why_symmetric: str = "",
    scores_given: str | None = None,
    sim_given: str | None = None,
) -> tuple[np.ndarray, np.ndarray, int, float, float]:
    """:func:`check_problem`, also returning ``max |scores|`` and ``max sim`` (read anyway)."""
    sg = scores_given or describe(scores)
    mg = sim_given or describe(sim)
    try:
        scores_arr = np.asarray(scores)
    except Exception as exc:
        raise InvalidInputError(f"scores must be an array of shape (N,) or (B, N); got {sg}") from exc
    try:
        sim_arr = np.asarray(sim)
    except Exception as exc:
        raise InvalidInputError(f"sim must be an array of shape (N, N) or (B, N, N); got {mg}") from exc
    if scores_arr.ndim not in (1, 2):
        raise InvalidInputError(f"scores must have shape (N,) or (B, N); got {sg}")
    batched = scores_arr.ndim == 2
    want = "(B, N, N)" if batched else "(N, N)"
    if sim_arr.ndim != scores_arr.ndim + 1:
        raise InvalidInputError(
            f"sim must have shape {want} to match scores of shape {tuple(scores_arr.shape)}; got {mg}"
        )
    n = scores_arr.shape[-1]
    expected = (*scores_arr.shape, n)
    if sim_arr.shape != expected:
        raise InvalidInputError(
            f"sim must be square and match scores: shape {expected} for scores of shape "
            f"{tuple(scores_arr.shape)}; got {mg}"
        )
    if sim_arr.dtype.kind in "iu":
        check_memory(f"sim of N = {n} tokens (an integer dtype, widened to float64)", sim_arr.size * 8.0)
    scores_arr, r_lo, r_hi = _as_real_array("scores", scores_arr, sg)
    r_abs = max(abs(r_lo), abs(r_hi))
    sim_arr, sim_min, sim_max = _as_real_array("sim", sim_arr, mg)
    if sim_min < 0:
        raise InvalidInputError(
            "sim must be non-negative (coverage and the redundancy penalty are submodular only "
            f"for s >= 0); got {mg} with negative entries. For cosine similarities in [-1, 1] "
            "pass (1 + s) / 2 (the TOPS and DivPrune rules are invariant to it) or clamp "
            "them at 0 yourself; tops-prune never clamps silently"
        )
    if need_symmetric and not _symmetric(sim_arr, sim_min, sim_max):
        raise InvalidInputError(
            f"sim must be symmetric (s[i, j] == s[j, i]) for {why_symmetric}; got {mg} that is not"
        )
    return scores_arr, sim_arr, check_budget(k, n), r_abs, sim_max


def check_problem(scores: object, sim: object, k: object, **kwargs) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate one selection problem given as NumPy-convertible arrays.

    Parameters
    ----------
    scores, sim
        Relevance ``(N,)`` or ``(B, N)`` and similarity ``(N, N)`` or ``(B, N, N)``
        (``N = 0`` and ``B = 0`` allowed: empty problems have empty answers).
    k
        Budget, ``0 <= k <= N``.
    **kwargs
        ``need_symmetric`` (whether the method reads ``sim`` as symmetric),
        ``why_symmetric`` (which method needs it, for the message),
        ``scores_given``, ``sim_given`` (descriptions of the caller's original
        arrays when they were converted before validation).

    Returns
    -------
    scores, sim : numpy.ndarray
        Float arrays (the input's float dtype, integers widened to float64);
        never copies of floating inputs, never modified.
    k : int

    Raises
    ------
    InvalidInputError
        On any violated requirement; the message names the argument, the
        requirement and what was given.
    """
    return check_problem_extremes(scores, sim, k, **kwargs)[:3]
