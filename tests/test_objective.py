"""Properties of the objective itself: definition, gains, submodularity, weights."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tops_core
from tops_core import Objective
from tops_core.testing import objectives, problems

TOL = 1e-9


def _subset(draw_mask, n):
    return np.flatnonzero(np.asarray(draw_mask[:n], dtype=bool))


@settings(max_examples=300)
@given(problems(max_n=8), objectives(), st.lists(st.booleans(), min_size=8, max_size=8))
def test_gains_equal_value_differences(problem, obj, mask):
    scores, sim, _ = problem
    members = _subset(mask, scores.shape[0])
    gains = obj.gains(scores, sim, members)
    base = obj.value(scores, sim, members)
    for e in np.setdiff1d(np.arange(scores.shape[0]), members):
        after = obj.value(scores, sim, np.append(members, e))
        assert gains[e] == pytest.approx(after - base, abs=TOL)


@settings(max_examples=300)
@given(problems(max_n=8), objectives(), st.lists(st.integers(0, 2), min_size=8, max_size=8))
def test_submodular_diminishing_returns(problem, obj, labels):
    """A subset of B: gain of e w.r.t. A >= gain w.r.t. B, for every e outside B."""
    scores, sim, _ = problem
    n = scores.shape[0]
    labels = np.asarray(labels[:n])
    a_set = np.flatnonzero(labels == 2)
    b_set = np.flatnonzero(labels >= 1)
    gain_a = obj.gains(scores, sim, a_set)
    gain_b = obj.gains(scores, sim, b_set)
    outside = np.flatnonzero(labels == 0)
    assert (gain_a[outside] >= gain_b[outside] - TOL).all()


@settings(max_examples=200)
@given(problems(max_n=8), st.lists(st.booleans(), min_size=8, max_size=8))
def test_monotone_without_redundancy(problem, mask):
    scores, sim, _ = problem
    obj = Objective(relevance=0.5, coverage=1.0, redundancy=0.0, focus=0.5)
    members = _subset(mask, scores.shape[0])
    assert (obj.gains(scores, sim, members) >= -TOL).all()


@settings(max_examples=100)
@given(problems(max_n=8))
def test_empty_set_is_zero_and_value_order_free(problem):
    scores, sim, _ = problem
    obj = Objective(relevance=0.25, redundancy=0.5)
    assert obj.value(scores, sim, []) == 0.0
    idx = np.arange(scores.shape[0])
    assert obj.value(scores, sim, idx) == pytest.approx(obj.value(scores, sim, idx[::-1]), abs=TOL)


def test_value_matches_formula_by_hand():
    scores = np.array([1.0, 3.0, 0.0])
    sim = np.array([[1.0, 0.5, 0.25], [0.5, 1.0, 0.0], [0.25, 0.0, 1.0]])
    obj = Objective(relevance=2.0, coverage=1.0, redundancy=4.0, focus=0.5)
    w = 0.5 + 0.5 * scores / scores.mean()  # [0.875, 1.625, 0.5]
    s_set = [0, 1]
    expected = 2.0 * (1 + 3) + (w * sim[:, s_set].max(axis=1)).sum() - 4.0 * sim[0, 1]
    assert obj.value(scores, sim, s_set) == pytest.approx(expected, abs=1e-12)


def test_row_weights_have_mean_one_and_uniform_fallback():
    obj = Objective(focus=0.75)
    w = obj.row_weights(np.array([0.0, 1.0, 2.0, 5.0]))
    assert w.mean() == pytest.approx(1.0)
    assert np.array_equal(obj.row_weights(np.zeros(4)), np.ones(4))
    assert np.array_equal(Objective(focus=0.0).row_weights(np.array([1.0, 9.0])), np.ones(2))


def test_coverage_is_scale_free_in_relevance():
    rng = np.random.default_rng(3)
    sim = tops_core.cosine(rng.normal(size=(12, 5)))
    r = rng.random(12)
    obj = Objective()
    idx = [1, 4, 7]
    assert obj.value(r, sim, idx) == pytest.approx(obj.value(1000.0 * r, sim, idx), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"relevance": -1.0}, "relevance"),
        ({"coverage": float("nan")}, "coverage"),
        ({"redundancy": float("inf")}, "redundancy"),
        ({"focus": 1.5}, "focus"),
        ({"focus": True}, "focus"),
    ],
)
def test_bad_weights_are_rejected(kwargs, needle):
    with pytest.raises(tops_core.InvalidInputError, match=needle):
        Objective(**kwargs)


def test_negative_scores_rejected_when_focus_positive():
    sim = np.eye(3)
    with pytest.raises(ValueError, match="scores must be non-negative when focus > 0"):
        Objective(focus=0.5).value(np.array([1.0, -1.0, 0.0]), sim, [0])
    assert Objective(focus=0.0, relevance=1.0).value(np.array([1.0, -1.0, 0.0]), sim, [1]) == 0.0


def test_value_rejects_bad_indices():
    sim = np.eye(3)
    with pytest.raises(ValueError, match="indices must be distinct"):
        Objective().value(np.ones(3), sim, [1, 1])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, N\)"):
        Objective().value(np.ones(3), sim, [3])
