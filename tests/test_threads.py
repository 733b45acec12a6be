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
from tops_core import _numba, _threads, _validate
from tops_core._validate import _extremes, exactly_symmetric, known_symmetry, spot_asymmetry, symmetry_memo
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


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", "", "\u00b2", str(_threads.MAX_SETTING + 1)])
def test_a_bad_thread_count_is_refused_by_name(monkeypatch, bad):
    monkeypatch.setenv("TOPS_NUM_THREADS", bad)
    with pytest.raises(ValueError, match="TOPS_NUM_THREADS must be an integer from 1 to 256"):
        _threads.thread_count()
    with pytest.raises(ValueError, match="TOPS_NUM_THREADS"):  # whatever the input's size
        tops_core.select(np.ones(4), np.eye(4), 2)


def test_small_reads_stay_on_the_calling_thread(monkeypatch):
    monkeypatch.setenv("TOPS_NUM_THREADS", "4")
    assert _threads.threads_for(_threads.SPLIT_ENTRIES - 1) == 1
    assert _threads.threads_for(_threads.SPLIT_ENTRIES) == 4


def test_split_map_keeps_order_and_uses_pool_threads():
    together = threading.Barrier(3, timeout=20)  # every part running at once, or the barrier breaks

    def part(p):
        together.wait()
        return p, threading.current_thread().name

    with split_everything(3):
        names = _threads.split_map(part, [0, 1, 2])
        assert _threads._pool_size == 3  # the pool follows the setting
    assert [p for p, _ in names] == [0, 1, 2]
    assert all(name.startswith("tops") for _, name in names[:-1])
    assert names[-1][1] == threading.current_thread().name  # the last part runs here


def test_a_worker_splits_nothing_further():
    """A pool thread queues nothing on the pool (never oversubscribed); its splits run where it is."""
    started = threading.Event()

    def on_worker(_):
        started.set()
        names = _threads.split_map(lambda q: threading.current_thread().name, [1, 2, 3])
        return _threads._submit(int, 1), names, threading.current_thread().name

    with split_everything(2):
        answer = _threads.in_background(on_worker, None)
        assert started.wait(20)  # running on a pool thread, so not taken back
        queued, names, worker = answer()
    assert worker.startswith("tops")
    assert queued is None
    assert names == [worker] * 3


def test_the_caller_runs_what_a_busy_pool_has_not_started():
    """Every pool thread blocked: queued parts are taken back and run on the calling thread."""
    release = threading.Event()
    with split_everything(2):
        blockers = [_threads._executor().submit(release.wait, 20) for _ in range(2)]
        try:
            names = _threads.split_map(lambda p: threading.current_thread().name, [1, 2, 3])
            check = _threads.in_background(lambda: threading.current_thread().name)
            assert names == [threading.current_thread().name] * 3
            assert check() == threading.current_thread().name
        finally:
            release.set()
        assert all(b.result(timeout=20) for b in blockers)


def test_a_pool_that_takes_no_work_leaves_it_to_the_caller(monkeypatch):
    """At interpreter shutdown the pool refuses new work; user threads still get answers."""

    class Closed:
        def submit(self, *args):
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    with split_everything(2):
        monkeypatch.setattr(_threads, "_executor", Closed)
        assert _threads.split_map(lambda p: p * 2, [1, 2, 3]) == [2, 4, 6]
        assert _threads.in_background(int, 3) is None
        rng = np.random.default_rng(0)
        sim = rng.random((64, 64))
        sim = sim + sim.T
        assert tops_core.select(rng.random(64), sim, 8).indices.shape == (8,)


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
    split = []
    real_split_map = _validate.split_map
    with split_everything(threads), pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            _validate, "split_map", lambda fn, parts: split.append(len(parts)) or real_split_map(fn, parts)
        )
        lo, hi = _extremes(x)
    np.testing.assert_array_equal([lo, hi], [x.min(), x.max()])  # NaN where min and max give NaN
    assert split == ([threads] if max(shape) >= threads else [])  # split along a long enough axis


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


@pytest.mark.parametrize(
    ("miss", "runs"),
    [
        (None, [True]),  # symmetric: the speculative run is the answer
        ((5, 39), [False]),  # seen by the spot check in the first rows: no speculation
        ((35, 39), [True, False]),  # seen only by the full check: the speculative run is discarded
    ],
)
def test_overlapped_check_gives_the_serial_answer(miss, runs):
    """``run`` sees ``rows`` as columns only when they are; an asymmetric speculation is rerun."""
    rng = np.random.default_rng(5)
    rows = rng.random((40, 40))
    rows = rows + rows.T
    if miss is not None:
        rows[miss] += 1.0
    seen = []

    def run(cols):
        seen.append(cols is rows)
        return np.array_equal(cols, rows.T)

    with split_everything(2):
        assert _numba.run_on_columns(rows, run)
    assert seen == runs


def test_the_spot_check_proves_asymmetry_and_remembers_it():
    a = np.ones((50, 50))
    assert not spot_asymmetry(a)
    a[40, 45] = 2.0
    assert not spot_asymmetry(a)  # beyond the probe: proves nothing
    a[3, 45] = 2.0
    with symmetry_memo():
        assert spot_asymmetry(a)
        assert known_symmetry(a) is False
    assert spot_asymmetry(np.ones((3, 4)))


@pytest.mark.parametrize("where", [None, (0, 1), (300, 900), (1099, 1098), (600, 5), (1000, 1001)])
def test_split_symmetry_check_on_256_blocks_finds_a_miss_in_any_band(monkeypatch, where):
    """N > 768 (256-row blocks), block rows split over 3 threads: a miss anywhere is found."""
    rng = np.random.default_rng(2)
    a = rng.random((1100, 1100)).astype(np.float32)
    a = a + a.T
    if where is not None:
        a[where] = np.nextafter(a[where], np.float32(3))
    split = []
    real_split_map = _validate.split_map
    monkeypatch.setattr(
        _validate, "split_map", lambda fn, parts: split.append(len(parts)) or real_split_map(fn, parts)
    )
    with split_everything(3):
        assert exactly_symmetric(a) == (where is None)
    assert split == [3]


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
