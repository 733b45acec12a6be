"""tops_core.spatial: the position-aware similarity keeps what the certificates need."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tops_core
from tops_core import features as features_mode
from tops_core.solvers import Greedy
from tops_core.spatial import FORMS, layout
from tops_core.testing import GRID, dyadic_arrays

# Dyadic strengths keep the mix exact enough to compare across frameworks bit for bit.
STRENGTHS = st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0])
SIGMAS = st.sampled_from([0.0, 0.5, 1.0, 2.0])


@st.composite
def grids(draw, max_side=4):
    """A layout: one (h, w), one (t, h, w), or a list of them."""
    one = st.one_of(
        st.tuples(st.integers(1, max_side), st.integers(1, max_side)),
        st.tuples(st.integers(1, 3), st.integers(1, max_side), st.integers(1, max_side)),
    )
    if draw(st.booleans()):
        return draw(one)
    return draw(st.lists(one, min_size=1, max_size=3))


@st.composite
def grid_problems(draw):
    grid = draw(grids())
    n = layout(grid)[0].shape[0]
    # hypothesis draws at most 8192 list elements: larger layouts (three 3x4x4 clips) are redrawn
    assume(n * n <= 4096)
    sim = draw(dyadic_arrays((n, n), max_value=1.0))
    sim = np.triu(sim) + np.triu(sim, 1).T
    return grid, sim


def direct(sim, grid, strength, sigma, form):
    """The documented formula, written out entry by entry."""
    coords, group = layout(grid)
    n = coords.shape[0]
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            d2 = float(((coords[i] - coords[j]) ** 2).sum())
            if group[i] != group[j]:
                g = 0.0
            elif sigma == 0:
                g = float(d2 == 0)
            else:
                g = np.exp(-d2 / (2 * sigma**2))
            s = sim[i, j]
            additive = (1 - strength) * s + strength * g
            out[i, j] = additive if form == "additive" else s * ((1 - strength) + strength * g)
    return out


@given(grid_problems(), STRENGTHS, SIGMAS, st.sampled_from(FORMS))
def test_symmetric_non_negative_and_the_direct_formula(problem, strength, sigma, form):
    grid, sim = problem
    mixed = tops_core.spatial(sim, grid, strength=strength, sigma=sigma, form=form)
    assert mixed.shape == sim.shape and mixed.dtype == sim.dtype
    np.testing.assert_array_equal(mixed, mixed.T)
    assert (mixed >= 0).all()
    np.testing.assert_allclose(mixed, direct(sim, grid, strength, sigma, form), rtol=1e-13, atol=1e-15)
    diag = (1 - strength) * np.diag(sim) + strength if form == "additive" else np.diag(sim)
    np.testing.assert_allclose(np.diag(mixed), diag, rtol=1e-15)


@given(grid_problems(), SIGMAS, st.sampled_from(FORMS))
def test_zero_strength_is_the_identity(problem, sigma, form):
    grid, sim = problem
    np.testing.assert_array_equal(tops_core.spatial(sim, grid, strength=0.0, sigma=sigma, form=form), sim)


@given(grid_problems(), STRENGTHS, SIGMAS, st.sampled_from(FORMS), st.data())
def test_certificate_holds_on_the_mixed_similarity(problem, strength, sigma, form, data):
    grid, sim = problem
    n = sim.shape[0]
    k = data.draw(st.integers(0, n))
    scores = data.draw(dyadic_arrays((n,)))
    mixed = tops_core.spatial(sim, grid, strength=strength, sigma=sigma, form=form)
    sel = tops_core.select(scores, mixed, k)
    assert sel.value <= sel.upper_bound * (1 + 1e-12) + 1e-12
    if n <= 8:
        best, _ = tops_core.testing.brute_force(tops_core.Objective(), scores, mixed, k)
        assert best <= sel.upper_bound * (1 + 1e-12) + 1e-12
        assert sel.value >= (1 - 1 / np.e) * best - 1e-12


def test_unrelated_grids_and_video_frames():
    sim = np.full((4 + 6, 4 + 6), 0.5)
    mixed = tops_core.spatial(sim, [(2, 2), (2, 3)], strength=0.5, sigma=1.0, form="additive")
    assert (mixed[:4, 4:] == 0.25).all()  # other crop: the kernel adds nothing
    assert mixed[0, 1] == pytest.approx(0.25 + 0.5 * np.exp(-0.5))
    video = tops_core.spatial(np.zeros((8, 8)), (2, 2, 2), strength=1.0, sigma=1.0, form="additive")
    assert video[0, 4] == pytest.approx(np.exp(-0.5))  # same place, next frame: one patch apart
    assert video[0, 7] == pytest.approx(np.exp(-1.5))
    damped = tops_core.spatial(sim, [(2, 2), (2, 3)], strength=0.5, sigma=1.0, form="multiplicative")
    assert (damped[:4, 4:] == 0.25).all() and damped[0, 0] == 0.5  # the diagonal is kept


def test_batched_rows_share_the_layout():
    rng = np.random.default_rng(0)
    sim = tops_core.cosine(rng.normal(size=(3, 6, 4)))
    mixed = tops_core.spatial(sim, (2, 3))
    for b in range(3):
        np.testing.assert_array_equal(mixed[b], tops_core.spatial(sim[b], (2, 3)))


def test_positions_match_the_grid_they_describe():
    rng = np.random.default_rng(1)
    sim = tops_core.cosine(rng.normal(size=(12, 5)))
    coords, _ = layout((3, 4))
    by_grid = tops_core.spatial(sim, (3, 4), strength=0.3, sigma=1.5)
    by_pos = tops_core.spatial(sim, positions=coords[:, 1:], strength=0.3, sigma=1.5)
    np.testing.assert_allclose(by_pos, by_grid, rtol=1e-15)


def _exact_problem(seed=0, n=12):
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 9, size=(n, n)) * GRID
    return np.triu(sim) + np.triu(sim, 1).T


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_agrees_with_numpy_on_device(form, dtype):
    torch = pytest.importorskip("torch")
    sim = _exact_problem().astype(dtype)
    want = tops_core.spatial(sim, [(2, 3), (2, 3)], strength=0.25, sigma=1.0, form=form)
    t = torch.from_numpy(sim)
    got = tops_core.spatial(t, [(2, 3), (2, 3)], strength=0.25, sigma=1.0, form=form)
    assert isinstance(got, torch.Tensor) and got.device == t.device and got.dtype == t.dtype
    np.testing.assert_array_equal(got.numpy(), want)
    batched = tops_core.spatial(torch.stack([t, t]), [(2, 3), (2, 3)], strength=0.25, form=form)
    np.testing.assert_array_equal(
        batched[1].numpy(), tops_core.spatial(sim, [(2, 3), (2, 3)], strength=0.25, form=form)
    )


@pytest.mark.parametrize("form", FORMS)
def test_mlx_agrees_with_numpy(form):
    mx = pytest.importorskip("mlx.core")
    sim = _exact_problem().astype(np.float32)
    want = tops_core.spatial(sim, (3, 4), strength=0.5, sigma=2.0, form=form)
    got = tops_core.spatial(mx.array(sim), (3, 4), strength=0.5, sigma=2.0, form=form)
    assert isinstance(got, mx.array) and got.dtype == mx.float32
    np.testing.assert_array_equal(np.array(got), want)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("grid", "k"), [((5, 6), 7), ([(4, 4), (2, 3, 2)], 9), ((1, 1), 1)])
def test_features_mode_matches_the_dense_path(monkeypatch, form, grid, k):
    monkeypatch.setattr(features_mode, "ROW_BLOCK", 8)  # several blocks at small N
    n = layout(grid)[0].shape[0]
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    r = rng.random(n).astype(np.float32)
    feats = tops_core.spatial(tops_core.Features(x), grid, strength=0.3, sigma=1.5, form=form)
    assert isinstance(feats, tops_core.SpatialFeatures)
    dense = feats.dense()
    np.testing.assert_array_equal(
        dense, tops_core.spatial(tops_core.Features(x).dense(), grid, strength=0.3, sigma=1.5, form=form)
    )
    for idx in ([0], [n - 1, 0]):
        for col in (0, n // 2):
            np.testing.assert_array_equal(feats.product(idx, col), dense[idx, col:])
    for objective in (tops_core.Objective(), tops_core.Objective(relevance=0.2, redundancy=0.05)):
        got = tops_core.select(r, feats, k, objective=objective)
        ref = Greedy().run(objective, r, dense, k)
        np.testing.assert_array_equal(got.order, ref.order)
        assert got.upper_bound >= got.value


def test_features_mode_through_the_full_pass(monkeypatch):
    """Past the row budget, greedy finishes from one pass over the mixed rows: same answer."""
    monkeypatch.setattr(features_mode, "ROW_BLOCK", 32)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(144, 8)).astype(np.float32)
    r = rng.random(144)
    feats = tops_core.spatial(tops_core.Features(x), (12, 12))
    got = tops_core.select(r, feats, 60)
    want = tops_core.select(r, feats.dense(), 60, method="greedy")
    np.testing.assert_array_equal(got.order, want.order)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"grid": (3, 5)}, "multiply (and add, over a list) to 15, but sim has N = 12"),
        ({"grid": (0, 12)}, "positive sizes"),
        ({"grid": (-3, -4)}, "positive sizes"),
        ({"grid": [(2, 3), (2, 2)]}, "to 10, but sim has N = 12"),
        ({"grid": []}, "at least one"),
        ({"grid": (3, 4.0)}, "grid must be (h, w) or (t, h, w)"),
        ({"grid": (12,)}, "grid must be (h, w) or (t, h, w)"),
        ({"grid": [(3, 4), (True, 1)]}, "grid[1] must be"),
        ({}, "exactly one of grid"),
        ({"grid": (3, 4), "positions": np.zeros((12, 2))}, "got both"),
        ({"positions": np.zeros((11, 2))}, "one row per token (N = 12)"),
        ({"positions": np.full((12, 2), np.nan)}, "finite"),
        ({"positions": [np.zeros((6, 2)), np.zeros((5, 2))]}, "(N = 12); got arrays of [6, 5] rows"),
        ({"positions": [np.zeros((6, 2)), np.zeros((6, 3))]}, "same number of coordinates D"),
        ({"positions": [np.zeros((6, 2)), np.zeros((0, 2))]}, "positions[1] must be a real array"),
        ({"grid": (3, 4), "strength": 1.5}, "0 <= strength <= 1.0"),
        ({"grid": (3, 4), "sigma": -1.0}, "sigma >= 0"),
        ({"grid": (3, 4), "form": "product"}, "form must be one of"),
    ],
)
def test_bad_inputs_get_clear_errors(kwargs, needle):
    with pytest.raises(tops_core.InvalidInputError) as err:
        tops_core.spatial(np.ones((12, 12)), **kwargs)
    assert needle in str(err.value)


def test_bad_similarity_is_described_not_printed():
    wrong_shape = r"shape \(N, N\) or \(B, N, N\).*shape \(3, 4\)"
    with pytest.raises(tops_core.InvalidInputError, match=wrong_shape):
        tops_core.spatial(np.ones((3, 4)), (3, 4))
    with pytest.raises(tops_core.InvalidInputError, match=r"floating dtype; got shape \(4, 4\), dtype int64"):
        tops_core.spatial(np.ones((4, 4), dtype=np.int64), (2, 2))
    with pytest.raises(tops_core.InvalidInputError, match="to 6, but the features have N = 4"):
        tops_core.spatial(tops_core.Features(np.eye(4)), (2, 3))


def test_positions_of_several_images_are_unrelated_across_images():
    rng = np.random.default_rng(2)
    sim = tops_core.cosine(rng.normal(size=(10, 5)))
    first, second = layout((2, 2))[0][:, 1:], layout((2, 3))[0][:, 1:]
    by_grid = tops_core.spatial(sim, [(2, 2), (2, 3)], strength=0.3, sigma=1.5)
    by_pos = tops_core.spatial(sim, positions=[first, second + 0.0], strength=0.3, sigma=1.5)
    np.testing.assert_allclose(by_pos, by_grid, rtol=1e-15)  # same place, different image: unrelated
    nested = tops_core.spatial(sim[:4, :4], positions=first.tolist(), strength=0.3, sigma=1.5)
    np.testing.assert_allclose(nested, by_grid[:4, :4], rtol=1e-15)  # a nested list is one array
    feats = tops_core.spatial(tops_core.Features(rng.normal(size=(10, 5))), positions=[first, second])
    np.testing.assert_array_equal(
        feats.dense(), tops_core.spatial(feats.base.dense(), positions=[first, second])
    )
    for idx, col in (([0, 9], 0), ([5], 3)):
        np.testing.assert_array_equal(feats.product(idx, col), feats.dense()[idx, col:])
