"""Extreme magnitudes, half precision, huge sizes, odd tensors: a valid answer or a clear error.

One test (or more) per class of issue 13; ``tests/test_fuzz.py`` covers the
same surface by random inputs.
"""

import warnings

import numpy as np
import pytest

import tops_core
from tops_core import (
    Exact,
    Features,
    Incremental,
    InvalidInputError,
    Objective,
    Stochastic,
    TopK,
    _validate,
)

RNG = np.random.default_rng(7)
# Dyadic values (multiples of 1/8): every power-of-two scaling below is exact.
R = RNG.integers(1, 9, 12) / 8.0
S = np.maximum(*(lambda a: (a, a.T))(RNG.integers(0, 9, (12, 12)) / 8.0))
ASYM = S.copy()
ASYM[0, 1] += 0.125


@pytest.fixture(autouse=True)
def _no_silent_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


# -- 1. invalid answers at extreme magnitudes are refused ---------------------------------
@pytest.mark.parametrize(
    "objective",
    [Objective(coverage=1e308), Objective(relevance=1e305), Objective(redundancy=1e307, coverage=0)],
)
def test_weights_that_overflow_float64_are_refused(objective):
    with pytest.raises(InvalidInputError, match=r"scores and sim are too large for float64 arithmetic"):
        tops_core.select(R, S, 4, objective=objective)


@pytest.mark.parametrize("rule", [tops_core.TOPSRule(alpha=1.7e308), tops_core.TOPSRule(lam=1e307)])
def test_rule_weights_that_overflow_are_refused(rule):
    for k in (2, 5):  # the transcription and the compiled path
        with pytest.raises(InvalidInputError, match=r"too large for float64 arithmetic"):
            tops_core.select(R, S, k, objective=rule)


def test_scores_whose_sum_overflows_are_refused_with_a_relevance_bonus():
    with pytest.raises(InvalidInputError, match=r"max \|scores\| = 1.12e\+307"):
        tops_core.select(R * 2.0**1020, S, 4, objective=Objective(relevance=1e-300))


# -- 2. scale-free answers stay the same at extreme but finite magnitudes -----------------
@pytest.mark.parametrize("scale", [2.0**1020, 2.0**-1060, 2.0**-1000])
@pytest.mark.parametrize("focus", [0.5, 1.0])
def test_relevance_weights_are_scale_free_from_subnormal_to_huge(scale, focus):
    objective = Objective(focus=focus)
    want = tops_core.select(R, S, 5, objective=objective)
    got = tops_core.select(R * scale, S, 5, objective=objective)
    np.testing.assert_array_equal(got.order, want.order)
    assert got.value == want.value and got.upper_bound == want.upper_bound


@pytest.mark.parametrize(
    "rule", [tops_core.TOPSRule(), tops_core.TOPSRule(norm="minmax"), tops_core.SCOPE(power=2.5)]
)
def test_rules_are_scale_free_in_the_scores(rule):
    want = tops_core.select(R, S, 5, objective=rule)
    got = tops_core.select(R * 2.0**1020, S, 5, objective=rule)
    np.testing.assert_array_equal(got.order, want.order)


def test_torch_at_extreme_magnitudes_answers_as_the_core():
    torch = pytest.importorskip("torch")
    want = tops_core.select(R, S, 5)
    got = tops_core.select(torch.tensor(R * 2.0**1020), torch.tensor(S), 5)
    assert got.order.tolist() == want.order.tolist()
    got32 = tops_core.select(
        torch.tensor(R * 2.0**120, dtype=torch.float32), torch.tensor(S, dtype=torch.float32), 5
    )  # sums past float32
    assert got32.order.tolist() == want.order.tolist()


def test_normalize_does_not_overflow():
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(tops_core.normalize(x * 2.0**1022), tops_core.normalize(x))
    np.testing.assert_array_equal(tops_core.normalize(np.array([-1.0, 1.0]) * 1.7e308, "minmax"), [0.0, 1.0])


# -- 3. norms in half precision and at large magnitudes -----------------------------------
@pytest.mark.parametrize(
    ("x", "dtype"),
    [
        ([[400.0, 300.0], [4.0, 3.0], [0.0, 1.0]], np.float16),  # |x|^2 passes float16's 65504
        ([[1e200, 1e200], [1.0, 1.0], [0.0, 1.0]], np.float64),
        ([[5e-324, 5e-324], [1.0, 1.0], [0.0, 1.0]], np.float64),  # subnormal: keeps its direction
    ],
)
def test_norms_neither_overflow_nor_vanish(x, dtype):
    x = np.array(x, dtype=dtype)
    sim = tops_core.cosine(x)
    assert sim.dtype == dtype
    tol = 4 * float(np.finfo(dtype).eps)  # rows 0 and 1 point the same way
    assert abs(float(sim[0, 1]) - 1) <= tol and abs(float(sim[0, 0]) - 1) <= tol
    assert 0.5 < float(sim[0, 2]) < 1.0
    unit = Features(x).unit
    np.testing.assert_allclose(np.linalg.norm(unit.astype(np.float64), axis=1), 1.0, rtol=1e-3)


# -- 4. size guards: refuse before allocating, naming the memory --------------------------
def test_cosine_refuses_a_similarity_that_cannot_fit():
    x = np.ones((10**6, 1), dtype=np.float32)  # 4 MB of features, a 4 TB similarity
    with pytest.raises(
        InvalidInputError,
        match=r"cosine of features with N = 1000000 tokens .* "
        r"would need 10.9 TiB of working memory",
    ):
        tops_core.cosine(x)


def test_features_dense_refuses_what_cannot_fit():
    feats = Features(np.ones((10**6, 1), dtype=np.float32))
    with pytest.raises(
        InvalidInputError, match=r"Features.dense\(\) with N = 1000000 tokens would need 3.6 TiB"
    ):
        feats.dense()


def test_features_refuse_a_selection_that_cannot_fit(monkeypatch):
    monkeypatch.setattr(_validate, "available_memory", lambda: 2**30)
    x = np.broadcast_to(np.ones((1, 2), dtype=np.float32), (10**7, 2))
    feats = Features(x)
    with pytest.raises(
        InvalidInputError,
        match=r"Features with N = 10000000 tokens would need .* GiB "
        r"of working memory; 1.0 GiB is available",
    ):
        tops_core.select(np.ones(10**7, dtype=np.float32), feats, 10)


def test_dense_paths_refuse_working_copies_that_cannot_fit(monkeypatch):
    monkeypatch.setattr(_validate, "available_memory", lambda: 100 * 2**20)
    n = 3000
    sim = np.broadcast_to(np.float32(0.5), (n, n))
    with pytest.raises(InvalidInputError, match=r"sim of N = 3000 tokens would need 137.3 MiB"):
        tops_core.select(np.ones(n, dtype=np.float32), sim, 3)
    topk = tops_core.select(np.ones(n, dtype=np.float32), sim, 3, objective=TopK())  # no copies
    assert topk.indices.tolist() == [0, 1, 2]


def test_exact_refuses_a_milp_that_cannot_fit(monkeypatch):
    monkeypatch.setattr(_validate, "available_memory", lambda: 2**20)
    n = 1000
    with pytest.raises(InvalidInputError, match=r"method='exact' on N = 1000 tokens would need"):
        tops_core.select(np.ones(n), np.eye(n), 3, method=Exact(max_n=n))


# -- 5. the answer in the caller's framework ----------------------------------------------
def test_features_answer_in_the_framework_of_the_scores():
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(12, 4))
    sel = tops_core.select(torch.tensor(R), Features(torch.tensor(x)), 4)
    assert all(isinstance(a, torch.Tensor) for a in (sel.indices, sel.order, sel.gains))
    assert sel.indices.dtype == torch.int64
    want = tops_core.select(R, Features(x), 4)
    assert sel.order.tolist() == want.order.tolist() and sel.method == "lazy+features+host"


# -- 6. rules check their reference's needs -----------------------------------------------
def test_a_rule_refuses_an_asymmetric_sim_its_reference_cannot_value():
    with pytest.raises(InvalidInputError, match=r"sim must be symmetric .* for the reference's redundancy"):
        tops_core.select(R, ASYM, 3, objective=TopK(), reference=Objective(redundancy=1))
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidInputError, match=r"sim must be symmetric"):
        tops_core.select(
            torch.tensor(R), torch.tensor(ASYM), 3, objective=TopK(), reference=Objective(redundancy=1)
        )


# -- 7. errors: short, never the data, from the right layer -------------------------------
@pytest.mark.parametrize(
    "k",
    [list(range(100_000)), 10**5000, "x" * 100_000, np.arange(10**5)],
    ids=["list", "huge-int", "long-str", "array"],
)
def test_bad_budget_messages_are_short_and_show_no_data(k):
    with pytest.raises(InvalidInputError, match=r"^k must") as info:
        tops_core.select(R, S, k)
    assert len(str(info.value)) < 200 and "99999" not in str(info.value)


def test_a_huge_method_name_gives_a_short_message():
    with pytest.raises(InvalidInputError, match=r"^method must be one of") as info:
        tops_core.select(R, S, 2, method="lazzy" * 100_000)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: Stochastic(seed=-1), r"seed must be a non-negative integer; got -1"),
        (lambda: Exact(time_limit=0), r"time_limit must be positive"),
    ],
)
def test_solver_parameters_are_checked_at_construction(factory, match):
    with pytest.raises(InvalidInputError, match=match):
        factory()


def test_exact_falls_back_to_greedy_when_highs_finds_no_set(monkeypatch):
    import scipy.optimize

    class Stopped:
        x, status, fun, message, mip_dual_bound = None, 1, np.nan, "time limit reached", np.nan

    monkeypatch.setattr(scipy.optimize, "milp", lambda *a, **kw: Stopped())
    sel = tops_core.select(R, S, 4, method=Exact())
    greedy = tops_core.select(R, S, 4, method="greedy")
    assert sel.indices.tolist() == greedy.indices.tolist() and not sel.optimal
    assert sel.value == greedy.value and sel.upper_bound >= sel.value


@pytest.mark.parametrize(
    "make",
    [
        lambda torch: (torch.ones(4, device="meta"), torch.ones(4, 4, device="meta")),
        lambda torch: (torch.ones(4), torch.eye(4).to_sparse()),
        lambda torch: (torch.ones(4).to_sparse(), torch.eye(4)),
        lambda torch: (torch.ones(4), torch.eye(4).to_sparse_csr()),
    ],
)
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_tensors_without_dense_data_are_refused(make):
    torch = pytest.importorskip("torch")
    scores, sim = make(torch)
    with pytest.raises(InvalidInputError, match=r"must be a dense \(strided\) tensor with data"):
        tops_core.select(scores, sim, 2)


def test_meta_features_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidInputError, match=r"features must be a dense"):
        Features(torch.ones(4, 2, device="meta"))
    with pytest.raises(InvalidInputError, match=r"features must be a dense"):
        tops_core.cosine(torch.ones(4, 2).to_sparse())


# -- 8. promises are checked ---------------------------------------------------------------
def test_incremental_symmetric_promise_is_checked():
    with pytest.raises(InvalidInputError, match=r"Incremental\(symmetric=True\); got shape \(12, 12\)"):
        tops_core.select(R, ASYM, 4, method=Incremental(symmetric=True))
    kept = tops_core.select(R, S, 4, method=Incremental(symmetric=True))
    assert kept.order.tolist() == tops_core.select(R, S, 4, method="greedy").order.tolist()


# -- N = 0 ---------------------------------------------------------------------------------
def test_no_tokens_give_the_empty_answer_in_every_mode():
    sel = tops_core.select(np.zeros(0), Features(np.zeros((0, 3))), 0)
    assert sel.indices.shape == (0,) and sel.value == 0.0 and sel.optimal
    assert tops_core.cosine(np.zeros((0, 3))).shape == (0, 0)
    torch = pytest.importorskip("torch")
    sel = tops_core.select(torch.ones(0), torch.ones(0, 0), 0)
    assert isinstance(sel.indices, torch.Tensor) and sel.indices.shape == (0,)


def test_objective_value_and_gains_refuse_what_overflows():
    objective = Objective(relevance=1.0)
    huge = R * 2.0**1020
    for call in (lambda: objective.value(huge, S, [0, 1]), lambda: objective.gains(huge, S)):
        with pytest.raises(InvalidInputError, match=r"too large for float64 arithmetic"):
            call()
    assert Objective().value(R * 2.0**1020, S, [0, 1]) == Objective().value(R, S, [0, 1])
