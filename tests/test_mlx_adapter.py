"""MLX adapter (runs on ``mlx[cpu]`` here, the same code runs on Metal): answers equal the core's.

The default route is the core on a zero-copy view of the arrays (unified
memory); the on-device loops run with ``use_route("loop")``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

mx = pytest.importorskip("mlx.core")

from tops_adapters import mlx as mlx_adapter  # noqa: E402

import tops_core  # noqa: E402
from tops_core import DPP, SCOPE, DivPrune, Objective, TopK, TOPSRule  # noqa: E402
from tops_core.api import _select_numpy, resolve  # noqa: E402
from tops_core.testing import GRID, problems  # noqa: E402

# focus = 0: see tests/test_torch_adapter.py (focus weights are not dyadic).
_weight = st.integers(0, 8).map(lambda v: v * GRID)
exact_objectives = st.builds(Objective, relevance=_weight, coverage=_weight, redundancy=_weight,
                             focus=st.just(0.0))
REFERENCE = Objective(focus=0.0)


def _both(scores, sim, k, objective, method="auto", dtype=mx.float32, route="loop"):
    # The loop runs the objective's "auto" as greedy (same answer as the core's "auto", greedy's
    # certificate); the core route is the core itself, method names included.
    core_method = "greedy" if method == "auto" and route == "loop" else method
    core = tops_core.select(scores, sim, k, objective=objective, method=core_method, reference=REFERENCE)
    with mlx_adapter.use_route(route):
        native = tops_core.select(mx.array(scores).astype(dtype), mx.array(sim).astype(dtype), k,
                                  objective=objective, method=method, reference=REFERENCE)
    return native, core


routes = st.sampled_from(["core", "loop"])


def _assert_same(native, core):
    assert native.method == core.method and not native.method.endswith("+host")
    assert native.order.dtype == mx.int64 and native.indices.dtype == mx.int64
    np.testing.assert_array_equal(np.array(native.order), core.order)
    np.testing.assert_array_equal(np.array(native.indices), core.indices)
    np.testing.assert_allclose(np.array(native.gains), core.gains, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.array(native.value), core.value, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.array(native.upper_bound), core.upper_bound, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.array(native.optimal), core.optimal)


@settings(max_examples=40)
@given(problems(max_n=8), exact_objectives, st.sampled_from(["auto", "greedy"]),
       st.sampled_from([mx.float32, mx.bfloat16]), routes)
def test_objective_greedy_equals_core(problem, objective, method, dtype, route):
    scores, sim, k = problem  # multiples of 1/8 up to 2: exact in bfloat16 too
    _assert_same(*_both(scores, sim, k, objective, method, dtype, route))


@settings(max_examples=30)
@given(problems(max_n=8), st.sampled_from([TopK(), DivPrune(), DivPrune(seed="relevance")]), routes)
def test_exact_rules_equal_core(problem, rule, route):
    scores, sim, k = problem
    _assert_same(*_both(scores, sim, k, rule, route=route))


@settings(max_examples=30)
@given(problems(max_n=8), st.sampled_from([TOPSRule(), TOPSRule(norm="minmax")]), routes)
def test_tops_rule_equals_core_in_float64_on_cpu(problem, rule, route):
    scores, sim, k = problem
    _assert_same(*_both(scores, sim, k, rule, dtype=mx.float64, route=route))


def test_default_route_runs_the_core_on_a_zero_copy_view(monkeypatch):
    import tops_core.api

    seen = []
    original = tops_core.api._select_numpy

    def spy(scores, sim, *args, **kwargs):
        seen.append((scores, sim))
        return original(scores, sim, *args, **kwargs)

    monkeypatch.setattr(tops_core.api, "_select_numpy", spy)
    scores, sim = _continuous(0, n=24)
    m_scores, m_sim = mx.array(scores), mx.array(sim)
    sel = tops_core.select(m_scores, m_sim, 6)
    # The view reads the array's own buffer: NumPy's base is MLX's memoryview, not a copy.
    assert len(seen) == 1 and all(isinstance(view.base, memoryview) for view in seen[0])
    core = tops_core.select(scores.astype(np.float32), sim.astype(np.float32), 6)
    assert sel.method == core.method == "incremental"
    assert sel.order.dtype == mx.int64 and sel.gains.dtype == mx.float64 and sel.value.shape == ()
    np.testing.assert_array_equal(np.array(sel.order), core.order)
    assert float(sel.value) == core.value and float(sel.upper_bound) == core.upper_bound


def _continuous(seed, n=40, dim=64, batch=None):
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    feats = rng.normal(size=(*lead, n, dim))
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    return rng.random((*lead, n)), (1 + feats @ np.swapaxes(feats, -1, -2)) / 2


@pytest.mark.parametrize("rule", [DPP(), TOPSRule(), Objective()])
@pytest.mark.parametrize("seed", range(3))
def test_float32_equals_core_with_clear_gaps(rule, seed):
    scores, sim = _continuous(seed)
    native, core = _both(scores, sim, 24, rule)  # the loop; the core route is the core
    np.testing.assert_array_equal(np.array(native.order), core.order)
    np.testing.assert_allclose(np.array(native.value), core.value, rtol=1e-5)


@pytest.mark.parametrize("route", ["auto", "loop"])
@pytest.mark.parametrize("objective", [Objective(), TOPSRule(), DPP(), DivPrune(), TopK()])
def test_batched_equals_row_by_row(objective, route):
    scores, sim = _continuous(11, n=24, batch=3)
    m_scores, m_sim = mx.array(scores), mx.array(sim)
    with mlx_adapter.use_route(route):
        batched = tops_core.select(m_scores, m_sim, 10, objective=objective)
        assert tuple(batched.order.shape) == (3, 10) and tuple(batched.value.shape) == (3,)
        rows = [tops_core.select(m_scores[b], m_sim[b], 10, objective=objective) for b in range(3)]
    for b, row in enumerate(rows):
        np.testing.assert_array_equal(np.array(batched.order[b]), np.array(row.order))
        np.testing.assert_allclose(np.array(batched.value[b]), np.array(row.value), rtol=1e-12)


def test_one_eval_per_step(monkeypatch):
    calls = []
    original = mx.eval

    def counting(*arrays):
        calls.append(len(arrays))
        return original(*arrays)

    monkeypatch.setattr(mx, "eval", counting)
    scores, sim = _continuous(2, n=20)
    with mlx_adapter.use_route("loop"):
        tops_core.select(mx.array(scores), mx.array(sim), 7)
    assert len(calls) == 7 + 1  # one per step, one for the answer


@pytest.mark.parametrize("route", ["auto", "loop"])
def test_bfloat16_widened_for_the_core(route):
    scores, sim = _continuous(3, n=12)
    b_scores, b_sim = mx.array(scores).astype(mx.bfloat16), mx.array(sim).astype(mx.bfloat16)
    with mlx_adapter.use_route(route):
        sel = tops_core.select(b_scores, b_sim, 4, method="stochastic")
    assert sel.method == ("stochastic" if route == "auto" else "stochastic+host")
    core = tops_core.select(np.array(b_scores.astype(mx.float32)), np.array(b_sim.astype(mx.float32)), 4,
                            method="stochastic")
    np.testing.assert_array_equal(np.array(sel.order), core.order)


@pytest.mark.parametrize("objective, method", [(Objective(), "exact"), (SCOPE(), "auto")])
def test_methods_without_native_loop_say_host(objective, method):
    scores, sim = _continuous(4, n=10)
    with mlx_adapter.use_route("loop"):
        sel = tops_core.select(mx.array(scores), mx.array(sim), 3, objective=objective, method=method)
    assert sel.method.endswith("+host") and isinstance(sel.order, mx.array)
    view = tops_core.select(mx.array(scores), mx.array(sim), 3, objective=objective, method=method)
    assert view.method == sel.method.removesuffix("+host")
    np.testing.assert_array_equal(np.array(view.order), np.array(sel.order))


def _core_message(scores, sim, k, objective=None):
    obj, solver = resolve(objective, "auto")
    with pytest.raises(tops_core.InvalidInputError) as info:
        _select_numpy(mlx_adapter.to_numpy(scores), mlx_adapter.to_numpy(sim), k, obj, solver, None,
                      scores_given=mlx_adapter.describe(scores), sim_given=mlx_adapter.describe(sim))
    return str(info.value)


_sym = mx.array([[1.0, 0.5], [0.5, 1.0]])
BAD_INPUTS = [
    ("negative sim", mx.ones(2), _sym - 0.75, 1, None),
    ("nan score", mx.array([1.0, float("nan")]), _sym, 1, None),
    ("asymmetric for a rule", mx.ones(2), mx.array([[1.0, 0.0], [0.5, 1.0]]), 1, DivPrune()),
    ("negative scores with focus", mx.array([-1.0, 1.0]), _sym, 1, None),
    ("k too large", mx.ones(2), _sym, 3, None),
    ("sim not square", mx.ones(2), mx.ones((2, 3)), 1, None),
]


@pytest.mark.parametrize("route", ["auto", "loop"])
@pytest.mark.parametrize("case, scores, sim, k, objective", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_the_core_error(case, scores, sim, k, objective, route):
    with mlx_adapter.use_route(route), pytest.raises(tops_core.InvalidInputError) as info:
        tops_core.select(scores, sim, k, objective=objective)
    assert str(info.value) == _core_message(scores, sim, k, objective)


def test_mixed_dtypes_that_do_not_promote_name_both_sides():
    with pytest.raises(tops_core.InvalidInputError, match="real dtypes") as info:
        tops_core.select(mx.ones(2), mx.ones((2, 2)).astype(mx.complex64), 1)
    assert "float32" in str(info.value) and "complex64" in str(info.value)
