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
        for col in (0, 1, 17, 39):  # the half pass multiplies by trailing columns only
            np.testing.assert_array_equal(feats.product(idx, col), dense[idx, col:])
    assert features_mode._columns_match(feats)


def test_dense_is_the_shifted_cosine():
    x = _tokens(30, dtype=np.float64)
    np.testing.assert_allclose(tops_core.Features(x).dense(), tops_core.cosine(x), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "objective",
    [
        tops_core.Objective(),
        tops_core.Objective(focus=0.0),
        tops_core.Objective(relevance=0.3, redundancy=0.02, focus=0.8),
    ],
)
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


@pytest.mark.parametrize(
    ("x", "phrase"),
    [
        (np.ones(5), "features must be a real array of shape (N, d)"),
        (np.array([["a", "b"]]), "features must be a real array of shape (N, d)"),
        (np.array([[1.0, np.nan]]), "features must be finite"),
    ],
)
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


@pytest.mark.parametrize(
    ("objective", "method"),
    [
        (tops_core.TOPSRule(), "auto"),
        (None, "stochastic"),
        (None, "exact"),
    ],
)
def test_features_refuse_rules_and_other_solvers(objective, method):
    with pytest.raises(tops_core.InvalidInputError, match=r"sim given as tops_core\.Features"):
        tops_core.select(np.ones(4), tops_core.Features(np.eye(4)), 2, objective=objective, method=method)


def _clustered(n, d, seed, dtype=np.float32):
    """The benchmark's kind of tokens: clusters of near-duplicates over a noise floor."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 8), d))
    return (centres[rng.integers(0, centres.shape[0], n)] + 0.8 * rng.normal(size=(n, d))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("focus", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_initial_bound_covers_the_canonical_gain(dtype, focus, seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 300)), int(rng.integers(1, 200))
    x = (rng.normal(size=(n, d)) * 10.0 ** rng.uniform(-3, 3)).astype(dtype)
    x[rng.random(n) < 0.1] = 0  # zero rows: cos = 0, sim = 1/2
    x[rng.random(n) < 0.1] *= -1e-30 if dtype == np.float64 else -1e-18  # tiny rows, flipped
    if n > 3:
        x[1] = -x[0]  # cos = -1: clipping
        x[2] = x[0]
    r = rng.random(n)
    r[rng.random(n) < 0.3] = 0
    feats = tops_core.Features(x)
    w = tops_core.Objective(focus=focus).row_weights(r)
    exact, _ = features_mode._initial_coverage(feats, w)
    bound = features_mode.coverage_bound(feats, w)
    assert (bound >= exact).all()
    if n > 50:  # rounding matters: the plain formula alone is exceeded
        u = feats.unit.astype(np.float64)
        assert (exact > (w.sum() + u @ (w @ u)) / 2).any()
    assert (bound <= exact * (1 + 1e-3) + 1e-9 * w.sum()).all()  # tight enough to be useful


@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize(
    "objective",
    [
        tops_core.Objective(),
        tops_core.Objective(focus=1.0),
        tops_core.Objective(relevance=0.3, redundancy=0.02, focus=0.8),
        tops_core.Objective(relevance=0.0, coverage=0.0, redundancy=0.1, focus=0.0),
    ],
)
@pytest.mark.parametrize("path", ["sparse", "rows", "int32", "blocks", "full-rows", "columns"])
def test_every_path_equals_greedy(monkeypatch, shift, objective, path):
    if path == "rows":
        monkeypatch.setattr(features_mode, "PASS_BYTES", 0)  # no pass
    if path == "int32":
        monkeypatch.setattr(features_mode, "SMALL_INDEX_N", 0)
    if path == "blocks":
        monkeypatch.setattr(features_mode, "PASS_BLOCK", 13)  # the last block is one row
    if path == "full-rows":
        monkeypatch.setattr(features_mode, "_columns_match", lambda feats: False)
    n, k = (157 if path == "blocks" else 160), 60
    x = _clustered(n, 24, seed=len(path))
    if not shift:
        x = np.abs(x)  # non-negative cosine
    feats = tops_core.Features(x, shift=shift)
    half = features_mode._half_bytes(feats, min(features_mode.PASS_BLOCK, n))
    if path == "columns":  # the half similarity fits, kept entries do not: lazy on its columns
        monkeypatch.setattr(features_mode, "PASS_BYTES", half)
    r = np.random.default_rng(1).random(n).astype(np.float32)
    r[::7] = 0
    got = tops_core.select(r, feats, k, objective=objective)
    ref = Greedy().run(objective, r, feats.dense(), k)
    np.testing.assert_array_equal(got.order, ref.order)
    assert got.gains.tolist() == ref.gains.tolist()
    assert got.value == pytest.approx(objective.value(r, feats.dense(), got.order), rel=1e-12, abs=1e-12)
    assert got.upper_bound >= got.value


def test_one_pass_and_few_rows(monkeypatch):
    n, k = 400, 80
    x, r = _clustered(n, 32, seed=5), np.random.default_rng(2).random(n)
    feats = tops_core.Features(x)
    built, passes = [], []
    product, half_pass = tops_core.Features.product, features_mode._half_pass
    monkeypatch.setattr(
        tops_core.Features,
        "product",
        lambda self, idx, col=0: built.append(len(idx)) or product(self, idx, col),
    )
    monkeypatch.setattr(features_mode, "_half_pass", lambda *a: passes.append(1) or half_pass(*a))
    got = tops_core.select(r, feats, k)
    assert passes == [1]
    assert sum(built) <= n + n // 4 + 16 + 2  # one pass, the rows before it and the probe
    np.testing.assert_array_equal(got.order, Greedy().run(tops_core.Objective(), r, feats.dense(), k).order)


@pytest.mark.parametrize("products", ["canonical", "auto"])
def test_entries_have_one_value_whatever_the_batch_and_the_route(monkeypatch, products):
    """The fixed-order kernel is symmetric and batch-independent by construction.

    "auto" only takes BLAS where the probe found it so.
    """
    monkeypatch.setattr(features_mode, "PRODUCTS", products)
    monkeypatch.setattr(features_mode, "ROW_BLOCK", 5)
    for dtype, d in ((np.float32, 13), (np.float64, 8), (np.float32, 1)):
        feats = tops_core.Features(_tokens(23, d=d, seed=d, dtype=dtype))
        dense = feats.dense()
        assert dense.dtype == dtype
        np.testing.assert_array_equal(dense, dense.T)
        for rows in ([4], [22, 0, 9], list(range(23))):
            for col in (0, 3, 22):
                np.testing.assert_array_equal(feats.product(rows, col), dense[rows, col:])
        x64 = feats.unit.astype(np.float64)
        np.testing.assert_allclose(dense, (1 + np.clip(x64 @ x64.T, -1, 1)) / 2, rtol=0, atol=1e-6)


def test_auto_takes_blas_only_where_the_probe_passes(monkeypatch):
    feats = tops_core.Features(_tokens(10))
    monkeypatch.setattr(features_mode, "blas_is_consistent", lambda dtype, d: False)
    assert feats.products == "canonical"
    monkeypatch.setattr(features_mode, "blas_is_consistent", lambda dtype, d: True)
    assert feats.products == "blas"
    monkeypatch.setattr(features_mode, "PRODUCTS", "canonical")
    assert feats.products == "canonical"


@pytest.mark.parametrize("size", features_mode._PROBE_SIZES)
def test_probe_refuses_blas_inconsistent_at_any_probed_size(monkeypatch, size):
    """A BLAS whose lone-column or larger products round differently is refused.

    (The matrix-vector forward, AVX-512 edge tiles.) The probe looks at every size it lists and at a
    lone column.
    """
    blas = features_mode._blas_products

    def drifting(unit, idx, col_start):
        block = blas(unit, idx, col_start)
        if unit.shape[0] == size and unit.shape[0] - col_start == 1:
            block = np.nextafter(block, np.inf)  # one ulp off, as a matrix-vector kernel may be
        return block

    monkeypatch.setattr(features_mode, "_blas_products", drifting)
    features_mode.blas_is_consistent.cache_clear()
    try:
        assert not features_mode.blas_is_consistent(np.dtype(np.float32), 3)
    finally:
        features_mode.blas_is_consistent.cache_clear()


def test_lone_row_and_lone_column_products_match_the_full_product():
    """One row or one column goes through GEMM too (never OpenBLAS's matrix-vector forward)."""
    unit = _tokens(9, d=5, seed=2, dtype=np.float32)
    full = features_mode._blas_products(unit, np.arange(9), 0)
    assert features_mode._blas_products(unit, np.array([4]), 8).shape == (1, 1)
    assert features_mode._blas_products(unit, np.arange(9), 8).shape == (9, 1)
    np.testing.assert_allclose(features_mode._blas_products(unit, np.array([4]), 8), full[4:5, 8:], rtol=1e-6)
