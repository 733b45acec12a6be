"""Every input check: the error names the argument, the requirement and what was given."""

import numpy as np
import pytest

import tops_core
from tops_core import InvalidInputError, Objective

S = np.eye(4, dtype=np.float32)
R = np.ones(4, dtype=np.float32)


def _raises(match, *args, **kwargs):
    with pytest.raises(InvalidInputError, match=match) as info:
        tops_core.select(*args, **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    return str(info.value)


def test_error_is_both_value_and_type_error():
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, TypeError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores(bad):
    scores = R.copy()
    scores[2] = bad
    msg = _raises(r"scores must be finite .* shape \(4,\), dtype float32", scores, S, 2)
    assert "nan" not in msg.lower().replace("nan or inf", "")


def test_non_finite_sim():
    sim = S.copy()
    sim[1, 2] = np.nan
    _raises(r"sim must be finite .* shape \(4, 4\), dtype float32", R, sim, 2)


def test_sim_not_square():
    _raises(r"sim must be square and match scores: shape \(4, 4\) .* got shape \(4, 3\)", R, S[:, :3], 2)


def test_sim_not_matching_scores():
    _raises(r"shape \(5, 5\) for scores of shape \(5,\); got shape \(4, 4\)", np.ones(5), S, 2)


def test_wrong_dimensionality():
    _raises(r"scores must have shape \(N,\) or \(B, N\); got shape \(1, 1, 4\)", R[None, None], S, 2)
    _raises(r"sim must have shape \(N, N\) to match scores of shape \(4,\); got shape \(4,\)", R, R, 2)
    _raises(r"sim must have shape \(B, N, N\)", R[None], S, 2)


def test_empty_input_gives_the_empty_answer():
    # A serving batch can hold an image cropped to no tokens: k = 0 of N = 0 is the empty set.
    sel = tops_core.select(np.zeros(0), np.zeros((0, 0)), 0)
    assert sel.indices.shape == sel.order.shape == sel.gains.shape == (0,)
    assert (sel.value, sel.upper_bound, sel.optimal) == (0.0, 0.0, True)
    _raises(r"0 <= k <= N = 0; got k = 1", np.zeros(0), np.zeros((0, 0)), 1)
    batch = tops_core.select(np.zeros((3, 0)), np.zeros((3, 0, 0)), 0)
    assert batch.indices.shape == (3, 0) and batch.value.tolist() == [0.0] * 3
    none = tops_core.select(np.zeros((0, 5)), np.zeros((0, 5, 5)), 2)
    assert none.indices.shape == (0, 2) and none.value.shape == (0,)


def test_non_numeric():
    _raises(r"scores must hold real numbers .* dtype <U1", np.array(list("abcd")), S, 2)
    _raises(r"sim must hold real numbers .* dtype complex128", R, S.astype(complex), 2)


def test_negative_similarities_suggest_remedies_and_are_never_clamped():
    sim = S.copy()
    sim[0, 1] = sim[1, 0] = -0.5
    msg = _raises(r"sim must be non-negative", R, sim, 2)
    assert "(1 + s) / 2" in msg and "clamp" in msg and "never clamps silently" in msg
    assert sim[0, 1] == -0.5


@pytest.mark.parametrize(
    "objective",
    [
        Objective(redundancy=0.5),
        tops_core.TOPSRule(),
        tops_core.DivPrune(),
        tops_core.DPP(),
        tops_core.SCOPE(),
    ],
)
def test_asymmetric_sim_rejected_where_symmetry_is_needed(objective):
    sim = S.copy()
    sim[0, 1] = 0.5
    _raises(
        r"sim must be symmetric .* got shape \(4, 4\), dtype float32 that is not",
        R,
        sim,
        2,
        objective=objective,
    )


def test_asymmetric_sim_is_fine_for_coverage():
    sim = S.copy()
    sim[0, 1] = 0.5
    assert tops_core.select(R, sim, 2).indices.shape == (2,)


@pytest.mark.parametrize(
    ("k", "match"),
    [
        (-1, r"0 <= k <= N = 4; got k = -1"),
        (5, r"0 <= k <= N = 4; got k = 5"),
        (2.0, r"k must be an integer .* got float 2.0"),
        (True, r"k must be an integer .* got bool True"),
        ("2", r"k must be an integer .* got str '2'"),
    ],
)
def test_bad_budget(k, match):
    _raises(match, R, S, k)


def test_numpy_integer_budget_is_accepted():
    assert tops_core.select(R, S, np.int32(2)).indices.shape == (2,)


def test_unknown_method_suggests_the_closest_name():
    _raises(r"method must be one of .* got 'lazzy'. Did you mean 'lazy'\?", R, S, 2, method="lazzy")
    _raises(r"method must be a name .* got int", R, S, 2, method=3)


def test_unknown_objective():
    _raises(r"objective must be a tops_core.Objective or a rule .* got str", R, S, 2, objective="tops")


def test_exact_above_the_size_guard():
    n = tops_core.MAX_EXACT_N + 1
    _raises(r"accepts N <= max_n = 64; got N = 65", np.ones(n), np.eye(n), 2, method="exact")


def test_unsupported_type_is_named():
    class NotAnArray:
        pass

    _raises(r"scores must have shape \(N,\) or \(B, N\); got type NotAnArray", NotAnArray(), S, 2)


def test_mixed_frameworks_are_named():
    torch = pytest.importorskip("torch")
    _raises(
        r"same framework; got scores as torch \(torch.Tensor with shape \(4,\).*\) and sim as "
        r"numpy \(shape \(4, 4\), dtype float32\)",
        torch.ones(4),
        S,
        2,
    )


def test_k_zero_and_k_n_are_valid():
    assert tops_core.select(R, S, 0).indices.shape == (0,)
    assert tops_core.select(R, S, 4).indices.tolist() == [0, 1, 2, 3]


def test_integer_inputs_are_accepted():
    sel = tops_core.select(np.array([1, 2, 3]), np.eye(3, dtype=np.int64), 2)
    assert sel.indices.shape == (2,)


def test_batched_checks_name_the_batch_shape():
    _raises(
        r"shape \(2, 4, 4\) for scores of shape \(2, 4\); got shape \(2, 4, 3\)",
        np.ones((2, 4)),
        np.ones((2, 4, 3)),
        2,
    )


def test_cosine_validates_features():
    with pytest.raises(InvalidInputError, match=r"features must be a real array of shape \(N, d\)"):
        tops_core.cosine(np.ones(3))
    with pytest.raises(InvalidInputError, match="features must be finite"):
        tops_core.cosine(np.array([[np.nan, 1.0]]))


def test_cosine_is_symmetric_and_shifted():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(20, 7)).astype(np.float32)
    sim = tops_core.cosine(feats)
    assert sim.dtype == np.float32 and np.array_equal(sim, sim.T)
    assert sim.min() >= 0 and sim.max() <= 1
    assert np.allclose(np.diag(sim), 1.0)
    raw = tops_core.cosine(feats, shift=False)
    assert np.allclose(sim, (1 + raw) / 2)
    zero = tops_core.cosine(np.zeros((2, 3)))
    assert np.array_equal(zero, np.full((2, 2), 0.5))
