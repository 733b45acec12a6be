"""Features mode: same answer as the dense similarity it stands for, clear errors."""

import numpy as np
import pytest

import tops_core
from tops_core import features as features_mode
from tops_core.solvers import Greedy


def _tokens(n, d=16, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d))
    x = centres[rng.integers(0, 6, n)] + 0.5 * rng.normal(size=(n, d))
    x[rng.integers(0, n, n // 5)] = x[rng.integers(0, n, n // 5)]  # duplicates: ties
    return x.astype(dtype)


def test_rows_do_not_depend_on_their_batch(monkeypatch):
    monkeypatch.setattr(features_mode, "ROW_BLOCK", 7)  # several blocks at small N
    feats = tops_core.Features(_tokens(40))
    dense = feats.dense()
    assert dense.shape == (40, 40)
    np.testing.assert_array_equal(dense, dense.T)  # rows serve as columns
    for idx in ([3], [39, 0], [5, 5, 12]):
        np.testing.assert_array_equal(feats.take(idx), dense[idx])


def test_dense_is_the_shifted_cosine():
    x = _tokens(30, dtype=np.float64)
    np.testing.assert_allclose(tops_core.Features(x).dense(), tops_core.cosine(x), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("objective", [
    tops_core.Objective(),
    tops_core.Objective(focus=0.0),
    tops_core.Objective(relevance=0.3, redundancy=0.02, focus=0.8),
])
@pytest.mark.parametrize(("n", "k"), [(1, 1), (9, 3), (70, 25), (70, 70)])
def test_features_equal_greedy_on_the_dense_matrix(monkeypatch, dtype, objective, n, k):
    monkeypatch.setattr(features_mode, "ROW_BLOCK", 16)
    x = _tokens(n, seed=n, dtype=dtype)
    r = np.random.default_rng(n).random(n).astype(dtype)
    feats = tops_core.Features(x)
    dense = feats.dense()
    got = tops_core.select(r, feats, k, objective=objective)
    ref = Greedy().run(objective, r, dense, k)
    np.testing.assert_array_equal(got.order, ref.order)
    assert got.gains.tolist() == ref.gains.tolist()
    want = tops_core.select(r, dense, k, objective=objective, method="greedy")
    assert got.value == pytest.approx(want.value, rel=1e-12, abs=1e-12)
    assert got.upper_bound >= got.value
    assert got.method == "lazy+features"


def test_features_accept_integers_and_zero_vectors():
    x = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    sel = tops_core.select(np.ones(4), tops_core.Features(x), 2)
    assert sel.indices.shape == (2,)


@pytest.mark.parametrize(("x", "phrase"), [
    (np.ones(5), "features must be a real array of shape (N, d)"),
    (np.ones((0, 3)), "features must be a real array of shape (N, d)"),
    (np.array([["a", "b"]]), "features must be a real array of shape (N, d)"),
    (np.array([[1.0, np.nan]]), "features must be finite"),
])
def test_bad_features_are_named(x, phrase):
    with pytest.raises(tops_core.InvalidInputError) as err:
        tops_core.Features(x)
    assert phrase in str(err.value)


def test_scores_must_match_the_features():
    feats = tops_core.Features(np.eye(4))
    with pytest.raises(tops_core.InvalidInputError, match=r"shape \(N,\) with N = 4"):
        tops_core.select(np.ones(5), feats, 2)
    with pytest.raises(tops_core.InvalidInputError, match="k must satisfy"):
        tops_core.select(np.ones(4), feats, 5)
    with pytest.raises(tops_core.InvalidInputError, match="scores must be finite"):
        tops_core.select(np.array([1.0, np.nan, 1.0, 1.0]), feats, 2)


def test_raw_cosine_with_negative_entries_is_refused():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(tops_core.InvalidInputError, match="sim must be non-negative"):
        tops_core.select(np.ones(3), tops_core.Features(x, shift=False), 2)


@pytest.mark.parametrize(("objective", "method"), [
    (tops_core.TOPSRule(), "auto"), (None, "stochastic"), (None, "exact"),
])
def test_features_refuse_rules_and_other_solvers(objective, method):
    with pytest.raises(tops_core.InvalidInputError, match=r"sim given as tops_core\.Features"):
        tops_core.select(np.ones(4), tops_core.Features(np.eye(4)), 2, objective=objective, method=method)
