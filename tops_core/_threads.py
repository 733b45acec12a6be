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

__all__ = ["MAX_THREADS", "SPLIT_ENTRIES", "thread_count", "threads_for", "split_map", "in_background"]

T = TypeVar("T")
R = TypeVar("R")

#: Default cap on the pool (memory bandwidth, not cores, bounds these reads).
MAX_THREADS = 4
#: Below this many entries one thread reads faster than a split (a hand-off costs ~50 us).
SPLIT_ENTRIES = 1 << 20

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_worker = threading.local()


def thread_count() -> int:
    """Threads a split read uses: ``TOPS_NUM_THREADS``, else this process's cores up to ``MAX_THREADS``.

    Raises
    ------
    ValueError
        When ``TOPS_NUM_THREADS`` is set to something other than a positive integer.
    """
    env = os.environ.get("TOPS_NUM_THREADS")
    if env is not None:
        if not env.strip().isdigit() or int(env) < 1:
            raise ValueError(f"TOPS_NUM_THREADS must be a positive integer; got {env[:20]!r}")
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_THREADS, cores))


def threads_for(entries: int) -> int:
    """Threads worth using to read ``entries`` array entries (1 below :data:`SPLIT_ENTRIES`)."""
    return thread_count() if entries >= SPLIT_ENTRIES else 1


def _mark_worker() -> None:
    _worker.active = True


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(1, thread_count()), thread_name_prefix="tops", initializer=_mark_worker
            )
        return _pool


def _forget_pool() -> None:
    # A forked child inherits the pool object but not its threads: work queued
    # there would never run. The child starts its own pool on first use.
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _on_worker() -> bool:
    return getattr(_worker, "active", False)


def split_map(fn: Callable[[T], R], parts: Sequence[T]) -> list[R]:
    """``[fn(p) for p in parts]``, the parts run concurrently (the last on the calling thread).

    Serial with one thread, one part, or when called from a pool thread (a
    worker never waits on the pool, so the pool cannot deadlock).
    """
    if len(parts) <= 1 or _on_worker() or thread_count() == 1:
        return [fn(p) for p in parts]
    pool = _executor()
    futures = [pool.submit(contextvars.copy_context().run, fn, p) for p in parts[:-1]]
    last = fn(parts[-1])
    return [f.result() for f in futures] + [last]


def in_background(fn: Callable[..., R], *args: object) -> Future[R] | None:
    """Start ``fn(*args)`` on a pool thread (in a copy of the caller's context); ``None`` when serial.

    ``None`` (one thread, or already on a pool thread) tells the caller to run
    ``fn`` itself when it needs the answer.
    """
    if _on_worker() or thread_count() == 1:
        return None
    return _executor().submit(contextvars.copy_context().run, fn, *args)
