"""The core's worker threads: reads of a large ``sim`` split across cores, or overlapped.

Validation's extremes and the exact symmetry check are memory-bound NumPy
reductions that release the GIL, and the compiled kernels are ``nogil``: on a
machine with more than one core they share one small pool instead of leaving
cores idle. Results never depend on the number of threads (the parts are
min, max and equality, which combine exactly).

``TOPS_NUM_THREADS`` sets the pool's size (``1`` runs everything on the
calling thread); the default is the cores this process may use, at most
:data:`MAX_THREADS` (the reads are memory-bound beyond that).
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = [
    "MAX_THREADS",
    "MAX_SETTING",
    "SPLIT_ENTRIES",
    "thread_count",
    "threads_for",
    "split_map",
    "in_background",
]

T = TypeVar("T")
R = TypeVar("R")

#: Default cap on the pool (memory bandwidth, not cores, bounds these reads).
MAX_THREADS = 4
#: Below this many entries one thread reads faster than a split (a hand-off costs ~50 us).
SPLIT_ENTRIES = 1 << 20

#: Largest ``TOPS_NUM_THREADS`` taken (a larger one is refused, not clamped).
MAX_SETTING = 256

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_worker = threading.local()


def thread_count() -> int:
    """Threads a split read uses: ``TOPS_NUM_THREADS``, else this process's cores up to ``MAX_THREADS``.

    Raises
    ------
    ValueError
        When ``TOPS_NUM_THREADS`` is set to anything but an integer from 1 to ``MAX_SETTING``.
    """
    env = os.environ.get("TOPS_NUM_THREADS")
    if env is not None:
        value = env.strip()
        if not (value.isascii() and value.isdecimal()) or not 1 <= int(value) <= MAX_SETTING:
            raise ValueError(f"TOPS_NUM_THREADS must be an integer from 1 to {MAX_SETTING}; got {env[:20]!r}")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_THREADS, cores))


def threads_for(entries: int) -> int:
    """Threads worth using to read ``entries`` array entries (1 below :data:`SPLIT_ENTRIES`)."""
    count = thread_count()  # a bad setting is refused whatever the size
    return count if entries >= SPLIT_ENTRIES else 1


def _mark_worker() -> None:
    _worker.active = True


def _executor() -> ThreadPoolExecutor:
    """The pool, sized by the current :func:`thread_count` (a changed setting gets a new pool)."""
    global _pool, _pool_size
    size = thread_count()
    with _lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)  # its queued work still runs
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tops", initializer=_mark_worker)
            _pool_size = size
        return _pool


def _forget_pool() -> None:
    # A forked child inherits the pool object but not its threads: work queued
    # there would never run. The child starts its own pool on first use.
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _submit(fn: Callable[..., R], *args: object) -> Future[R] | None:
    """``fn(*args)`` queued on the pool, or ``None`` where the caller must run it itself.

    ``None`` with one thread, on a pool thread (a worker never waits on the
    pool, so the pool cannot deadlock), and once the interpreter shuts down
    (the pool then takes no new work, while user threads may still call).
    """
    if getattr(_worker, "active", False) or thread_count() == 1:
        return None
    try:
        return _executor().submit(fn, *args)
    except RuntimeError:
        return None


def _answer(future: Future[R] | None, fn: Callable[..., R], *args: object) -> R:
    # Work no pool thread has started is taken back and run here: under load
    # the caller computes instead of waiting behind a busy pool.
    if future is None or future.cancel():
        return fn(*args)
    return future.result()


def split_map(fn: Callable[[T], R], parts: Sequence[T]) -> list[R]:
    """``[fn(p) for p in parts]``, the parts run concurrently (the last on the calling thread)."""
    futures = [_submit(fn, p) for p in parts[:-1]]
    last = [fn(parts[-1])] if parts else []
    return [_answer(f, fn, p) for f, p in zip(futures, parts[:-1], strict=True)] + last


def in_background(fn: Callable[..., R], *args: object) -> Callable[[], R] | None:
    """Start ``fn(*args)`` on a pool thread, in a copy of the caller's context.

    Returns
    -------
    callable or None
        Gives the answer (computing it on the calling thread if no pool thread
        has started it); ``None`` where nothing can run in the background, so
        the caller runs ``fn`` itself.
    """
    context = contextvars.copy_context()
    future = _submit(context.run, fn, *args)
    if future is None:
        return None
    return lambda: _answer(future, context.run, fn, *args)
