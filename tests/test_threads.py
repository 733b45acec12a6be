"""The core's worker threads: split reads answer as serial ones, overlap never changes an answer."""

import multiprocessing
import threading
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tops_core
from tops_core import _numba, _threads
from tops_core._validate import _extremes, exactly_symmetric, symmetry_memo
from tops_core.solvers import Greedy, Incremental


@contextmanager
def split_everything(threads: int):
    """Every array counts as large and the pool has ``threads`` threads."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOPS_NUM_THREADS", str(threads))
        mp.setattr(_threads, "SPLIT_ENTRIES", 1)
        yield


def test_thread_count_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TOPS_NUM_THREADS", "3")
    assert _threads.thread_count() == 3
    monkeypatch.delenv("TOPS_NUM_THREADS")
    assert 1 <= _threads.thread_count() <= _threads.MAX_THREADS


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", ""])
def test_a_bad_thread_count_is_refused_by_name(monkeypatch, bad):
    monkeypatch.setenv("TOPS_NUM_THREADS", bad)
    with pytest.raises(ValueError, match="TOPS_NUM_THREADS must be a positive integer"):
        _threads.thread_count()


def test_small_reads_stay_on_the_calling_thread(monkeypatch):
    monkeypatch.setenv("TOPS_NUM_THREADS", "4")
    assert _threads.threads_for(_threads.SPLIT_ENTRIES - 1) == 1
    assert _threads.threads_for(_threads.SPLIT_ENTRIES) == 4


def test_split_map_keeps_order_and_uses_pool_threads():
    with split_everything(3):
        names = _threads.split_map(lambda p: (p, threading.current_thread().name), [0, 1, 2])
    assert [p for p, _ in names] == [0, 1, 2]
    assert all(name.startswith("tops") for _, name in names[:-1])
    assert names[-1][1] == threading.current_thread().name  # the last part runs here


def test_a_worker_never_waits_on_the_pool():
    """Nested splits from every worker at once run serially instead of deadlocking."""

    def nested(p):
        return sum(_threads.split_map(lambda q: q * p, [1, 2, 3]))

    with split_everything(2):
        outer = [_threads.in_background(_threads.split_map, nested, [1, 2, 3]) for _ in range(4)]
        assert [f.result(timeout=20) for f in outer] == [[6, 12, 18]] * 4


def test_serial_settings_run_nothing_in_the_background(monkeypatch):
    monkeypatch.setenv("TOPS_NUM_THREADS", "1")
    assert _threads.in_background(int, 3) is None
    assert (
        _threads.split_map(lambda p: threading.current_thread().name, [0, 1])
        == [threading.current_thread().name] * 2
    )


def _child_splits(queue):
    # One part goes to the pool: an inherited pool would take it and never run it.
    queue.put(_threads.split_map(lambda p: p + 1, [1, 2]))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_gets_a_pool_of_its_own():
    with split_everything(2):
        assert _threads.split_map(lambda p: p, [1, 2]) == [1, 2]  # the parent's pool exists
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_splits, args=(queue,))
        with warnings.catch_warnings():  # Python >= 3.12 warns about forking a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            child.start()
        try:
            assert queue.get(timeout=10) == [2, 3]
            child.join(timeout=10)
        finally:
            if child.is_alive():
                child.kill()
    assert child.exitcode == 0


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(7,), (5, 9), (1, 6, 6), (2, 3, 4), (3, 1)]),
    special=st.sampled_from(["none", "nan", "inf", "-inf"]),
    threads=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
def test_split_extremes_are_min_and_max(shape, special, threads, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    if special != "none":
        x.flat[rng.integers(0, x.size)] = float(special)
    with split_everything(threads):
        lo, hi = _extremes(x)
    np.testing.assert_array_equal([lo, hi], [x.min(), x.max()])  # NaN where min and max give NaN


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 700),
    threads=st.integers(2, 4),
    change=st.sampled_from(["none", "nudge", "signed zero", "nan mirrored"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_symmetry_check_is_array_equal(n, threads, change, seed):
    """Whichever band holds the miss (or none), the split answer is ``array_equal(a, a.T)``."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)).astype(np.float32)
    a = a + a.T
    i, j = rng.integers(0, n, 2)
    if change == "nudge":
        a[i, j] = np.nextafter(a[i, j], np.float32(3))
    elif change == "signed zero":
        a[i, j], a[j, i] = 0.0, -0.0
    elif change == "nan mirrored":
        a[i, j] = a[j, i] = np.nan
    with split_everything(threads):
        assert exactly_symmetric(a) == np.array_equal(a, a.T)


@pytest.mark.parametrize("symmetric", [True, False])
def test_overlapped_check_gives_the_serial_answer(symmetric):
    """``run`` sees ``rows`` as columns only when they are; an asymmetric speculation is rerun."""
    rng = np.random.default_rng(5)
    rows = rng.random((40, 40))
    if symmetric:
        rows = rows + rows.T
    seen = []

    def run(cols):
        seen.append(cols is rows)
        return np.array_equal(cols, rows.T)

    with split_everything(2):
        assert _numba.run_on_columns(rows, run)
    assert seen == ([True] if symmetric else [True, False])


def test_a_known_symmetry_starts_no_check(monkeypatch):
    rows = np.eye(8)
    with split_everything(2), symmetry_memo():
        assert exactly_symmetric(rows)
        monkeypatch.setattr(_numba, "in_background", lambda *a: pytest.fail("checked again"))
        assert _numba.run_on_columns(rows, lambda cols: cols is rows)


@pytest.mark.parametrize(
    ("objective", "symmetric"),
    [
        (tops_core.Objective(focus=0.0), True),
        (tops_core.Objective(focus=0.0), False),
        (tops_core.Objective(), True),
    ],
)  # (the redundancy penalty refuses an asymmetric sim)
def test_threaded_select_equals_greedy(objective, symmetric):
    """The whole call with every read split and the check overlapped: greedy's order and gains."""
    rng = np.random.default_rng(11)
    n, k = 120, 30
    sim = rng.random((n, n))
    if symmetric:
        sim = (sim + sim.T) / 2
    r = rng.random(n)
    want = Greedy().run(objective, r, sim, k)
    with split_everything(2):
        got = Incremental().run(objective, r, sim, k)
        sel = tops_core.select(r, sim, k, objective=objective)
    np.testing.assert_array_equal(got.order, want.order)
    np.testing.assert_array_equal(got.gains, want.gains)
    np.testing.assert_array_equal(np.sort(sel.indices), np.sort(want.order))
