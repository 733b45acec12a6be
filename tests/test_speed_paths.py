"""Fast paths give the reference answers: auto == greedy bit for bit, fused checks unchanged."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tops_core
from tops_core._numba import coverage_all, gain_kernels, matrix_kernels
from tops_core._validate import exactly_symmetric as is_symmetric
from tops_core.objective import lane_sum
from tops_core.solvers import Greedy, Incremental, Lazy
from tops_core.solvers._certificate import gains_along, start_state
from tops_core.testing import problems

OBJECTIVES = [
    tops_core.Objective(),
    tops_core.Objective(focus=0.0),
    tops_core.Objective(focus=1.0),
    tops_core.Objective(relevance=0.5, coverage=1.0, redundancy=0.05, focus=0.3),
    tops_core.Objective(relevance=1.0, coverage=0.0),
]


def _sequential_lanes(row: np.ndarray) -> float:
    """The canonical reduction written out term by term."""
    lanes = [0.0] * 8
    for j, t in enumerate(row):
        lanes[j % 8] += float(t)
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


@pytest.mark.parametrize("n", [1, 3, 8, 13, 64, 129, 1000])
def test_lane_sum_is_the_written_out_reduction(n):
    rng = np.random.default_rng(n)
    terms = rng.random((5, n)) * rng.random(n) ** 6  # mixed magnitudes: order matters
    got = lane_sum(terms)
    assert got.tolist() == [_sequential_lanes(row) for row in terms]
    # each row alone gives the same bits as within a block
    assert [lane_sum(terms[i : i + 1])[0] for i in range(5)] == got.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [5, 16, 77])
def test_numba_lane_gain_matches_numpy_kernel(dtype, n):
    rng = np.random.default_rng(7)
    col = rng.random(n).astype(dtype)
    m = rng.random(n) * 0.8
    w = rng.random(n) * 2
    want = lane_sum((np.maximum(col - m, 0.0) * w)[None])[0]
    assert gain_kernels().lane_gain(col, m, w) == want


@pytest.mark.parametrize("block", [1, 7, 33, 100, 1000])
def test_streamed_lanes_are_the_canonical_gains_whatever_the_row_blocks(block):
    # add_lanes adds four rows of a lane per pass; blocks starting anywhere must
    # still give every candidate the canonical reduction of its column.
    rng = np.random.default_rng(block)
    n = 203
    sim = (rng.random((n, n)) ** 3).astype(np.float32)
    m = rng.random(n) * 0.4
    w = rng.random(n) * 2
    lanes = np.zeros((8, n))
    for start in range(0, n, block):
        gain_kernels().add_lanes(sim[start : start + block], start, w, m, lanes)
    want = lane_sum(np.maximum(sim.T.astype(np.float64) - m, 0.0) * w)
    assert gain_kernels().combine_lanes(lanes).tolist() == want.tolist()


def _assert_same_run(objective, r, sim, k):
    ref = Greedy().run(objective, r, sim, k)
    got = Incremental().run(objective, r, sim, k)
    lazy = Lazy().run(objective, r, sim, k)
    np.testing.assert_array_equal(got.order, ref.order)
    assert got.gains.tolist() == ref.gains.tolist()  # bit for bit
    np.testing.assert_array_equal(lazy.order, ref.order)
    assert lazy.gains.tolist() == ref.gains.tolist()
    value = objective.value_of(r, sim, ref.order)
    assert got.upper_bound >= value - 1e-9 * max(1.0, abs(value))


@settings(max_examples=60)
@given(problems(max_n=12, dtype=np.float32), st.sampled_from(OBJECTIVES))
def test_auto_equals_greedy_dyadic_float32(problem, objective):
    scores, sim, k = problem
    _assert_same_run(objective, scores, sim, k)


@settings(max_examples=60)
@given(problems(max_n=12, symmetric=False), st.sampled_from(OBJECTIVES[:3]))
def test_auto_equals_greedy_dyadic_asymmetric(problem, objective):
    scores, sim, k = problem
    _assert_same_run(objective, scores, sim, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("objective", OBJECTIVES, ids=range(len(OBJECTIVES)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_equals_greedy_random_with_duplicates(dtype, objective, seed):
    rng = np.random.default_rng(seed)
    n = 150
    x = rng.normal(size=(n, 24))
    x[rng.integers(0, n, 30)] = x[rng.integers(0, n, 30)]  # exact duplicates: tied gains
    sim = tops_core.cosine(x.astype(dtype))
    r = rng.random(n).astype(dtype)
    r[:20] = r[20:40]  # tied relevance too
    _assert_same_run(objective, r, sim, 40)


@pytest.mark.parametrize("objective", OBJECTIVES[:4], ids=range(4))
def test_auto_equals_greedy_on_benchmark_like_clusters(objective):
    # Hundreds of rows change per early step (the kernel applies them eight at a
    # time) and clusters of near-duplicates leave many gains within 1e-3 of
    # each other: the drift bound and the canonical re-decisions are exercised.
    rng = np.random.default_rng(4)
    n = 600
    centres = rng.normal(size=(n // 16, 64))
    x = centres[rng.integers(0, centres.shape[0], n)] + 0.8 * rng.normal(size=(n, 64))
    sim = tops_core.cosine(x.astype(np.float32))
    r = rng.random(n).astype(np.float32)
    _assert_same_run(objective, r, sim, 150)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_equals_greedy_nonsymmetric_random(dtype):
    rng = np.random.default_rng(3)
    sim = rng.random((97, 97)).astype(dtype)
    r = rng.random(97).astype(dtype)
    assert not is_symmetric(sim)
    for objective in OBJECTIVES[:3]:
        _assert_same_run(objective, r, sim, 30)


def test_all_tied_gains_take_lowest_indices():
    sim = np.full((40, 40), 0.5, dtype=np.float32)
    np.fill_diagonal(sim, 1.0)
    sel = tops_core.select(np.ones(40, np.float32), sim, 10)
    assert sel.order.tolist() == list(range(10))
    assert sel.gains.tolist() == tops_core.select(np.ones(40), sim, 10, method="greedy").gains.tolist()


def test_select_auto_batched_matches_greedy():
    rng = np.random.default_rng(5)
    sims = np.stack([tops_core.cosine(rng.normal(size=(60, 8)).astype(np.float32)) for _ in range(3)])
    r = rng.random((3, 60)).astype(np.float32)
    auto = tops_core.select(r, sims, 12)
    ref = tops_core.select(r, sims, 12, method="greedy")
    np.testing.assert_array_equal(auto.order, ref.order)
    np.testing.assert_array_equal(auto.value, ref.value)
    assert auto.method == "incremental"


def test_value_fast_max_equals_definition():
    rng = np.random.default_rng(9)
    sim = rng.random((50, 50)).astype(np.float32)
    idx = np.array([3, 49, 0, 17])
    want = sim[:, idx].max(axis=1).astype(np.float64)
    np.testing.assert_array_equal(matrix_kernels().max_over_columns(sim, idx), want)


@pytest.mark.parametrize("n", [700, 1100])  # blocks of 128 and of 256
def test_is_symmetric_exact(n):
    rng = np.random.default_rng(1)
    a = rng.random((n, n))
    a = a + a.T
    assert is_symmetric(a)
    a[650, 3] = np.nextafter(a[650, 3], 2.0)
    assert not is_symmetric(a)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    change=st.sampled_from(["none", "nudge", "signed zero", "nan on the diagonal", "nan mirrored"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    view=st.booleans(),
)
def test_blockwise_symmetry_is_array_equal(n, seed, change, dtype, view):
    """The block compare answers as ``array_equal(a, a.T)``: block edges, NaN, -0.0, strided views."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)).astype(dtype)
    a = a + a.T
    i, j = rng.integers(0, n, 2)
    if change == "nudge":
        a[i, j] = np.nextafter(a[i, j], dtype(2))
    elif change == "signed zero":
        a[i, j], a[j, i] = 0.0, -0.0
    elif change == "nan on the diagonal":
        a[i, i] = np.nan
    elif change == "nan mirrored":
        a[i, j] = a[j, i] = np.nan
    if view:  # a strided view: the kernel reads any layout
        a = np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[::2, ::2]
    want = np.array_equal(a, a.T)
    assert is_symmetric(a) == want


@pytest.mark.parametrize(
    ("bad", "phrase"),
    [
        (np.nan, "sim must be finite (no NaN or inf)"),
        (np.inf, "sim must be finite (no NaN or inf)"),
        (-np.inf, "sim must be finite (no NaN or inf)"),
        (-0.25, "sim must be non-negative"),
    ],
)
def test_fused_sim_checks_keep_their_messages(bad, phrase):
    sim = np.full((6, 6), 0.5, dtype=np.float32)
    sim[4, 1] = bad
    with pytest.raises(tops_core.InvalidInputError) as err:
        tops_core.select(np.ones(6), sim, 2)
    assert phrase in str(err.value)
    assert "shape (6, 6), dtype float32" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fused_score_checks_keep_their_messages(bad):
    scores = np.ones(6)
    scores[2] = bad
    with pytest.raises(tops_core.InvalidInputError, match=r"scores must be finite \(no NaN or inf\)"):
        tops_core.select(scores, np.full((6, 6), 0.5), 2)


@pytest.mark.slow
def test_numba_is_imported_on_first_use_only():
    code = (
        "import sys, numpy as np, tops_core; assert 'numba' not in sys.modules; "
        "tops_core.select(np.ones(4), np.eye(4), 2); assert 'numba' in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


RULES = [
    tops_core.TOPSRule(),
    tops_core.TOPSRule(norm="minmax"),
    tops_core.TOPSRule(alpha=0.0, lam=1.0),
    tops_core.TOPSRule(alpha=1.0, lam=0.0, norm="minmax"),
    tops_core.TOPSRule(alpha=2.0, lam=0.25),
]


@settings(max_examples=80)
@given(problems(max_n=12, dtype=np.float32), st.sampled_from(RULES))
def test_tops_rule_fast_path_is_the_transcription_dyadic(problem, rule):
    scores, sim, k = problem
    np.testing.assert_array_equal(rule.order(scores, sim, k), rule.transcription(scores, sim, k))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES, ids=range(len(RULES)))
@pytest.mark.parametrize("seed", [0, 1])
def test_tops_rule_fast_path_is_the_transcription_random(dtype, rule, seed):
    rng = np.random.default_rng(seed)
    n = 120
    x = rng.normal(size=(n, 12))
    x[rng.integers(0, n, 25)] = x[rng.integers(0, n, 25)]  # exact duplicates: tied scores
    sim = tops_core.cosine(x.astype(dtype))
    r = rng.random(n).astype(dtype)
    r[:10] = r[10:20]
    np.testing.assert_array_equal(rule.order(r, sim, 90), rule.transcription(r, sim, 90))


def _tiny_spread_problem():
    r = np.array([3, 0, 1, 2, 1, 0.5]) * 5e-324  # subnormal scores: 1 / scale overflows
    sim = np.full((6, 6), 0.5)
    np.fill_diagonal(sim, 1.0)
    return r, sim


@pytest.mark.parametrize(
    ("scale_r", "scale_s", "rule"),
    [
        (5e-324, 1.0, tops_core.TOPSRule(norm="minmax", alpha=0.0, lam=0.0)),
        (1e-310, 1.0, tops_core.TOPSRule()),
        (1e-170, 1.0, tops_core.TOPSRule()),
        (1.0, 1e-300, tops_core.TOPSRule()),
        (1.0, 1e200, tops_core.TOPSRule(alpha=0.0, lam=1.0)),
        (1.0, 1e200, tops_core.TOPSRule(norm="minmax")),
        (1e250, 1.0, tops_core.TOPSRule()),
    ],
)
def test_tops_rule_fast_path_at_extreme_magnitudes_is_the_transcription(scale_r, scale_s, rule):
    # Relative rounding bounds fail for subnormal or huge scales: such steps must
    # go to the transcription (found in review: wrong picks and ZeroDivisionError).
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = 60
        r = rng.random(n) * scale_r
        if scale_r == 5e-324:
            r = np.floor(rng.random(n) * 4) * 5e-324
        sim = tops_core.cosine(rng.normal(size=(n, 5))) * scale_s
        np.testing.assert_array_equal(rule.order(r, sim, 40), rule.transcription(r, sim, 40))
        sel = tops_core.select(r, sim, 40, objective=rule)
        np.testing.assert_array_equal(sel.order, rule.transcription(r, sim, 40))


def test_tops_rule_fast_path_with_a_subnormal_spread():
    r, sim = _tiny_spread_problem()
    rule = tops_core.TOPSRule(norm="minmax", alpha=0.0, lam=0.0)
    np.testing.assert_array_equal(rule.order(r, sim, 4), rule.transcription(r, sim, 4))


def test_tops_rule_fast_path_on_a_slightly_asymmetric_sim():
    rng = np.random.default_rng(4)
    sim = tops_core.cosine(rng.normal(size=(80, 6)))
    sim[3, 7] = np.nextafter(sim[3, 7], 2.0)  # within the symmetry tolerance, not exact
    rule = tops_core.TOPSRule()
    r = rng.random(80)
    np.testing.assert_array_equal(rule.order(r, sim, 50), rule.transcription(r, sim, 50))


@pytest.mark.parametrize("objective", OBJECTIVES, ids=range(len(OBJECTIVES)))
@pytest.mark.parametrize("symmetric", [True, False])
def test_fast_certificate_matches_numpy_state(objective, symmetric):
    rng = np.random.default_rng(11)
    sim = rng.random((45, 45)).astype(np.float32)
    if symmetric:
        sim = np.maximum(sim, sim.T)
    r = rng.random(45).astype(np.float32)
    order = rng.permutation(45)[:12]
    gains, state = gains_along(objective, r, sim, order)
    ref = objective.start(r, sim)
    want = []
    for i in order:
        f, g = ref.gains(np.array([i]))
        want.append(f[0])
        ref.add(int(i), float(f[0]), float(g[0]))
    assert gains.tolist() == want
    assert state.upper_value == pytest.approx(ref.upper_value, rel=1e-12)
    rest = np.setdiff1d(np.arange(45), order)
    for got, exp in zip(state.gains(rest), ref.gains(rest), strict=True):
        assert got.tolist() == exp.tolist()
    for got, exp in zip(
        start_state(objective, r, sim).gains(rest), objective.start(r, sim).gains(rest), strict=True
    ):
        assert got.tolist() == exp.tolist()


def test_float16_inputs_take_the_numpy_path_with_the_same_answer():
    rng = np.random.default_rng(2)
    sim = tops_core.cosine(rng.normal(size=(30, 5))).astype(np.float16)
    sim = np.maximum(sim, sim.T)
    r = rng.random(30).astype(np.float16)
    auto = tops_core.select(r, sim, 8)
    ref = tops_core.select(r, sim, 8, method="greedy")
    np.testing.assert_array_equal(auto.order, ref.order)
    rule = tops_core.TOPSRule()
    np.testing.assert_array_equal(
        tops_core.select(r, sim, 8, objective=rule).order, rule.transcription(r, sim, 8)
    )


def test_incremental_is_selectable_by_name():
    rng = np.random.default_rng(11)
    sim = tops_core.cosine(rng.normal(size=(50, 6)))
    scores = rng.random(50)
    by_name = tops_core.select(scores, sim, 9, method="incremental")
    assert by_name.method == "incremental"
    assert np.array_equal(by_name.order, tops_core.select(scores, sim, 9, method="greedy").order)


REFERENCES = [
    tops_core.Objective(),
    tops_core.Objective(focus=1.0),
    tops_core.Objective(relevance=0.5, coverage=0.0),
    tops_core.Objective(relevance=0.3, redundancy=0.05, focus=0.2),
]


@pytest.mark.parametrize("reference", REFERENCES, ids=range(len(REFERENCES)))
@pytest.mark.parametrize("objective", [None, tops_core.TOPSRule(), tops_core.DivPrune()])
def test_value_from_the_solvers_running_max_is_the_definition(objective, reference):
    # select() takes the value from the max the solver (or the certificate) tracked;
    # it must equal the value computed from sim by definition, bit for bit.
    rng = np.random.default_rng(11)
    x = rng.normal(size=(150, 12)).astype(np.float32)
    r = rng.random(150).astype(np.float32)
    sim = tops_core.cosine(x)
    if objective is None:
        sel = tops_core.select(r, sim, 37, objective=reference)
    else:
        sel = tops_core.select(r, sim, 37, objective=objective, reference=reference)
    assert sel.value == reference.value(r, sim, sel.indices)


def test_rule_coverage_kernel_is_the_numpy_coverage_bit_for_bit():
    from tops_core.rules import _coverage_gains

    rng = np.random.default_rng(5)
    sim = rng.random((203, 203)).astype(np.float32) ** 3  # mixed magnitudes: order matters
    m = rng.random(203) * 0.5
    chosen = rng.random(203) < 0.3
    keep = (~chosen).astype(np.float64)
    cand = np.flatnonzero(~chosen)
    want = _coverage_gains(sim, m, cand, keep)
    got = coverage_all(np.ascontiguousarray(sim.T), keep, m)[cand]  # c_i reads row i of sim
    assert got.tolist() == want.tolist()


def test_symmetry_memo_keeps_no_array_alive():
    import gc
    import weakref

    from tops_core._validate import exactly_symmetric, symmetry_memo

    with symmetry_memo():
        tmp = np.asfortranarray(tops_core.cosine(np.random.default_rng(3).normal(size=(30, 4))))
        tmp = np.ascontiguousarray(tmp)  # a temporary copy, as the solvers make
        assert exactly_symmetric(tmp)
        ref = weakref.ref(tmp)
        del tmp
        gc.collect()
        assert ref() is None  # the memo did not keep the copy


def test_batched_noncontiguous_select_matches_rows():
    rng = np.random.default_rng(8)
    sims = np.stack([tops_core.cosine(rng.normal(size=(50, 6))) for _ in range(3)])
    sims_f = np.asfortranarray(sims)
    r = rng.random((3, 50))
    for rule in (tops_core.Objective(), tops_core.TOPSRule()):
        batched = tops_core.select(r, sims_f, 12, objective=rule)
        for b in range(3):
            one = tops_core.select(r[b], sims[b], 12, objective=rule)
            np.testing.assert_array_equal(batched.order[b], one.order)
            assert batched.value[b] == one.value


def test_symmetry_memo_is_scoped_to_one_call_and_one_object():
    from tops_core._validate import exactly_symmetric, symmetry_memo

    a = tops_core.cosine(np.random.default_rng(2).normal(size=(40, 5)))
    with symmetry_memo():
        assert exactly_symmetric(a)
        a[3, 4] += 1.0  # never happens inside select(); shows the answer is remembered
        assert exactly_symmetric(a)
        assert not exactly_symmetric(a.copy())  # another object is checked afresh
    assert not exactly_symmetric(a)  # outside the call nothing is remembered


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 203])
def test_greedy_lead_is_a_sequential_scan(n):
    """The 8-lane leader / runner-up equals a first-index scan, with ties, chosen tokens and NaN."""
    from tops_core.solvers._greedy_kernels import _lead

    rng = np.random.default_rng(n)
    for trial in range(50):
        r = rng.integers(0, 4, n).astype(np.float64)  # few values: many exact ties
        cov = rng.integers(0, 3, n).astype(np.float64)
        offset = np.where(rng.random(n) < 0.3, -np.inf, -rng.integers(0, 2, n).astype(np.float64))
        if trial % 5 == 0:
            cov[rng.integers(0, n)] = np.nan
        f = (0.5 * r + 2.0 * cov) + offset
        best, second, pick = -np.inf, -np.inf, -1
        for i, v in enumerate(f):
            if v > best:
                best, second, pick = v, best, i
            elif v > second:
                second = v
        got = _lead(r, cov, offset, 0.5, 2.0)
        assert (int(got[0]), float(got[1]), float(got[2])) == (pick, best, second)
