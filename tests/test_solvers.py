"""Solvers: exact == brute force, certificates, approximation, lazy == greedy, prefixes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tops_core
from tops_core import Exact, Objective, Stochastic
from tops_core.testing import brute_force, objectives, problems

TOL = 1e-9


def _well_formed(sel, n, k, objective, scores, sim):
    assert sel.indices.dtype == np.int64 and sel.order.dtype == np.int64
    assert sel.indices.shape == (k,) and sel.order.shape == (k,) and sel.gains.shape == (k,)
    assert np.array_equal(sel.indices, np.sort(sel.order))
    assert np.unique(sel.indices).size == k
    assert ((sel.indices >= 0) & (sel.indices < n)).all()
    assert sel.value == pytest.approx(objective.value(scores, sim, sel.indices), abs=TOL)
    assert math.fsum(sel.gains) == pytest.approx(sel.value, abs=1e-7)
    assert sel.value <= sel.upper_bound


@settings(max_examples=150)
@given(problems(max_n=7), objectives())
def test_exact_equals_brute_force(problem, obj):
    scores, sim, k = problem
    sel = tops_core.select(scores, sim, k, objective=obj, method="exact")
    best, _ = brute_force(obj, scores, sim, k)
    assert sel.optimal
    assert sel.value == pytest.approx(best, abs=1e-7)
    _well_formed(sel, scores.shape[0], k, obj, scores, sim)


@settings(max_examples=150)
@given(problems(max_n=7), objectives(), st.sampled_from(["greedy", "lazy", "stochastic"]))
def test_greedy_family_is_bracketed_by_exact_and_its_bound(problem, obj, method):
    """greedy.value <= exact.value <= greedy.upper_bound, for every objective."""
    scores, sim, k = problem
    sel = tops_core.select(scores, sim, k, objective=obj, method=method)
    best, _ = brute_force(obj, scores, sim, k)
    _well_formed(sel, scores.shape[0], k, obj, scores, sim)
    assert sel.value <= best + TOL
    assert best <= sel.upper_bound + TOL


@settings(max_examples=200)
@given(problems(max_n=8), objectives(monotone=True))
def test_greedy_within_one_minus_one_over_e_when_monotone(problem, obj):
    scores, sim, k = problem
    sel = tops_core.select(scores, sim, k, objective=obj, method="greedy")
    best, _ = brute_force(obj, scores, sim, k)
    assert sel.value >= (1 - 1 / math.e) * best - TOL


@settings(max_examples=300)
@given(problems(max_n=10), objectives())
def test_lazy_equals_greedy_bit_for_bit_on_dyadic(problem, obj):
    scores, sim, k = problem
    greedy = tops_core.select(scores, sim, k, objective=obj, method="greedy")
    lazy = tops_core.select(scores, sim, k, objective=obj, method="lazy")
    assert np.array_equal(greedy.order, lazy.order)
    assert np.array_equal(greedy.gains, lazy.gains)


@settings(max_examples=60)
@given(st.integers(0, 2**31 - 1), st.integers(2, 80), st.sampled_from([np.float32, np.float64]), objectives())
def test_lazy_equals_greedy_bit_for_bit_on_random_floats(seed, n, dtype, obj):
    rng = np.random.default_rng(seed)
    sim = tops_core.cosine(rng.normal(size=(n, 6))).astype(dtype)
    scores = rng.random(n).astype(dtype)
    k = int(rng.integers(0, n + 1))
    greedy = tops_core.select(scores, sim, k, objective=obj, method="greedy")
    lazy = tops_core.select(scores, sim, k, objective=obj, method="lazy")
    assert np.array_equal(greedy.order, lazy.order)
    assert np.array_equal(greedy.gains, lazy.gains)


def test_ties_go_to_the_lowest_index():
    sim = np.ones((6, 6))
    for method in ("greedy", "lazy"):
        sel = tops_core.select(np.ones(6), sim, 3, method=method)
        assert sel.order.tolist() == [0, 1, 2]


@settings(max_examples=150)
@given(problems(max_n=9, min_k=1), objectives(), st.sampled_from(["greedy", "lazy"]))
def test_prefix_property(problem, obj, method):
    scores, sim, k = problem
    full = tops_core.select(scores, sim, k, objective=obj, method=method)
    for m in range(k + 1):
        part = tops_core.select(scores, sim, m, objective=obj, method=method)
        assert np.array_equal(part.order, full.order[:m])


@settings(max_examples=100)
@given(problems(max_n=8), st.sampled_from(["greedy", "lazy", "stochastic", "exact", "auto"]))
def test_inputs_are_not_modified(problem, method):
    scores, sim, k = problem
    s0, m0 = scores.copy(), sim.copy()
    tops_core.select(scores, sim, k, method=method, objective=Objective(redundancy=0.25))
    assert np.array_equal(scores, s0) and np.array_equal(sim, m0)


@settings(max_examples=40)
@given(problems(max_n=6, batch=3), objectives())
def test_batched_equals_row_by_row(problem, obj):
    scores, sim, k = problem
    batch = tops_core.select(scores, sim, k, objective=obj, method="lazy")
    assert batch.indices.shape == (3, k) and batch.value.shape == (3,)
    for b in range(3):
        row = tops_core.select(scores[b], sim[b], k, objective=obj, method="lazy")
        assert np.array_equal(batch.order[b], row.order)
        assert batch.value[b] == row.value and batch.upper_bound[b] == row.upper_bound


def test_k_zero_and_k_n():
    rng = np.random.default_rng(0)
    sim = tops_core.cosine(rng.normal(size=(9, 4)))
    scores = rng.random(9)
    for method in ("greedy", "lazy", "stochastic", "exact"):
        empty = tops_core.select(scores, sim, 0, method=method)
        assert empty.indices.shape == (0,) and empty.value == 0.0 and empty.upper_bound == 0.0
        full = tops_core.select(scores, sim, 9, method=method)
        assert full.indices.tolist() == list(range(9)) and full.optimal
        assert full.upper_bound == pytest.approx(full.value)


def test_stochastic_is_reproducible_and_seeded():
    rng = np.random.default_rng(1)
    sim = tops_core.cosine(rng.normal(size=(300, 8)))
    scores = rng.random(300)
    a = tops_core.select(scores, sim, 20, method=Stochastic(seed=7))
    b = tops_core.select(scores, sim, 20, method=Stochastic(seed=7))
    c = tops_core.select(scores, sim, 20, method=Stochastic(seed=8, epsilon=0.5))
    assert np.array_equal(a.order, b.order)
    assert not np.array_equal(a.order, c.order)
    greedy = tops_core.select(scores, sim, 20, method="greedy")
    assert a.value <= greedy.upper_bound + TOL and a.value >= 0.9 * greedy.value


def test_greedy_certificate_closes_on_separable_clusters():
    """Three tight clusters and k = 3: greedy picks one per cluster and proves it optimal."""
    centers = np.eye(3)
    feats = np.repeat(centers, 4, axis=0)
    sim = tops_core.cosine(feats)
    sel = tops_core.select(np.ones(12), sim, 3, method="greedy")
    assert sel.optimal and sel.ratio == pytest.approx(1.0)
    assert sorted(sel.indices // 4) == [0, 1, 2]


def test_exact_size_guard_and_time_limit():
    rng = np.random.default_rng(2)
    n = tops_core.MAX_EXACT_N + 1
    sim = tops_core.cosine(rng.normal(size=(n, 4)))
    with pytest.raises(ValueError, match=r"accepts N <= max_n = 64; got N = 65"):
        tops_core.select(rng.random(n), sim, 5, method="exact")
    sel = tops_core.select(rng.random(n), sim, 5, method=Exact(max_n=n, time_limit=30))
    assert sel.optimal and sel.method == "exact"


@pytest.mark.slow
def test_exact_reports_dual_bound_when_stopped_early():
    rng = np.random.default_rng(5)
    n = 60
    sim = tops_core.cosine(rng.normal(size=(n, 3)))
    scores = rng.random(n)
    sel = tops_core.select(scores, sim, 12, method=Exact(time_limit=1.0), objective=Objective(redundancy=0.5))
    greedy = tops_core.select(scores, sim, 12, method="greedy", objective=Objective(redundancy=0.5))
    assert sel.value <= sel.upper_bound
    if not sel.optimal:  # stopped by the time limit: the dual bound is a real ceiling
        assert sel.upper_bound >= greedy.value - TOL


def test_solver_options_are_validated():
    with pytest.raises(ValueError, match="epsilon"):
        Stochastic(epsilon=1.5)
    with pytest.raises(TypeError, match="seed must be an integer"):
        Stochastic(seed=1.5)
    with pytest.raises(ValueError, match="max_n"):
        Exact(max_n=0)
