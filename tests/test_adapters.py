"""The framework adapters (PyTorch, MLX) answer as the core does, on every route.

One file for every framework with an adapter: the ``native_backend`` fixture
(``tests/conftest.py``) runs each test on PyTorch and on MLX, skipping a
framework that is not installed. On CPU tensors and MLX arrays the default
route is the core on a zero-copy view; the on-device loops (what a GPU runs,
and the Triton kernels' reference) run with ``use_route("loop")``. What only
one framework has lives in ``test_torch_adapter.py`` / ``test_mlx_adapter.py``.
"""

import numpy as np
import pytest
from backends import continuous
from hypothesis import given, settings
from hypothesis import strategies as st

import tops_core
from tops_core import DPP, SCOPE, DivPrune, Objective, TopK, TOPSRule
from tops_core.registry import METHODS
from tops_core.testing import objectives, problems

# focus = 0: dyadic coverage weights, so float32 sums are exact (see tops_core.testing.objectives).
exact_objectives = objectives(focus=0.0)
exact_rules = st.sampled_from([TopK(), DivPrune(), DivPrune(seed="relevance")])
# TOPSRule divides by means: its scores are exact in float64 (tiny dyadic sums), not in float32.
float64_rules = st.sampled_from([TOPSRule(), TOPSRule(norm="minmax"), TOPSRule(alpha=0.0), TOPSRule(lam=0.0)])
routes = st.sampled_from(["core", "loop"])
REFERENCE = Objective(focus=0.0)


def select_both(
    backend, scores, sim, k, objective, method="auto", dtype="float32", reference=REFERENCE, route="loop"
):
    """``(native, core)``: the backend's answer on ``route`` and the core's on the NumPy inputs.

    The loop runs the objective's ``"auto"`` as greedy (the core's ``"auto"`` answer, with greedy's
    certificate); the core route is the core itself, method names included.
    """
    core_method = "greedy" if method == "auto" and route == "loop" else method
    core = tops_core.select(scores, sim, k, objective=objective, method=core_method, reference=reference)
    with backend.use_route(route):
        native = tops_core.select(
            backend.array(scores, dtype),
            backend.array(sim, dtype),
            k,
            objective=objective,
            method=method,
            reference=reference,
        )
    return native, core


def assert_same(backend, native, core):
    """Same method, order, indices (int64, in the framework), gains, value, bound and optimality."""
    assert native.method == core.method and not native.method.endswith("+host")
    assert native.order.dtype == backend.dtype("int64") and native.indices.dtype == backend.dtype("int64")
    assert native.gains.dtype == backend.dtype("float64")
    np.testing.assert_array_equal(backend.numpy(native.order), core.order)
    np.testing.assert_array_equal(backend.numpy(native.indices), core.indices)
    np.testing.assert_allclose(backend.numpy(native.gains), core.gains, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(backend.numpy(native.value), core.value, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(backend.numpy(native.upper_bound), core.upper_bound, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(backend.numpy(native.optimal), core.optimal)


# ------------------------------------------------------------ exact inputs
@settings(max_examples=40)
@given(
    problem=problems(max_n=8),
    objective=exact_objectives,
    method=st.sampled_from(["auto", "lazy", "greedy"]),
    dtype=st.sampled_from(["float32", "float64", "bfloat16"]),
    route=routes,
)
def test_objective_greedy_equals_core(native_backend, problem, objective, method, dtype, route):
    scores, sim, k = problem  # multiples of 1/8 up to 2: exact in bfloat16 too
    assert_same(
        native_backend, *select_both(native_backend, scores, sim, k, objective, method, dtype, route=route)
    )


@settings(max_examples=30)
@given(
    problem=problems(max_n=8),
    rule=exact_rules,
    dtype=st.sampled_from(["float32", "bfloat16"]),
    reference=exact_objectives,
    route=routes,
)
def test_exact_rules_equal_core(native_backend, problem, rule, dtype, reference, route):
    scores, sim, k = problem
    # The reference objective certifies the rule's set: its gains, value and bound must match too.
    assert_same(
        native_backend,
        *select_both(native_backend, scores, sim, k, rule, dtype=dtype, reference=reference, route=route),
    )


@settings(max_examples=30)
@given(problem=problems(max_n=8), rule=float64_rules, route=routes)
def test_tops_rule_equals_core_in_float64(native_backend, problem, rule, route):
    scores, sim, k = problem
    assert_same(
        native_backend, *select_both(native_backend, scores, sim, k, rule, dtype="float64", route=route)
    )


# ------------------------------------------------------- continuous inputs
@pytest.mark.parametrize(
    "objective", [DPP(), DPP(quality="raw"), TOPSRule(), TOPSRule(norm="minmax"), Objective()]
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", range(3))
def test_loops_equal_core_with_clear_gaps(native_backend, objective, dtype, seed):
    scores, sim = continuous(seed)
    native, core = select_both(native_backend, scores, sim, 24, objective, dtype=dtype, reference=None)
    np.testing.assert_array_equal(native_backend.numpy(native.order), core.order)
    np.testing.assert_allclose(native_backend.numpy(native.value), core.value, rtol=1e-5)


@settings(max_examples=20)
@given(
    problem=problems(max_n=7, batch=3),
    objective=st.sampled_from(
        [
            Objective(focus=0.0),
            Objective(relevance=0.5, redundancy=0.25, focus=0.0),
            TopK(),
            DivPrune(),
            TOPSRule(),
        ]
    ),
    method=st.sampled_from(["auto", "greedy"]),
    route=st.sampled_from(["auto", "loop"]),
)
def test_batched_equals_row_by_row(native_backend, problem, objective, method, route):
    scores, sim = native_backend.array(problem[0]), native_backend.array(problem[1])
    k = problem[2]
    with native_backend.use_route(route):
        batched = tops_core.select(scores, sim, k, objective=objective, method=method)
        rows = [tops_core.select(scores[b], sim[b], k, objective=objective, method=method) for b in range(3)]
    assert tuple(batched.order.shape) == (3, k) and tuple(batched.value.shape) == (3,)
    for b, row in enumerate(rows):
        for field in ("order", "indices"):
            np.testing.assert_array_equal(
                native_backend.numpy(getattr(batched, field)[b]), native_backend.numpy(getattr(row, field))
            )
        for field in ("gains", "value", "upper_bound"):
            np.testing.assert_allclose(
                native_backend.numpy(getattr(batched, field)[b]),
                native_backend.numpy(getattr(row, field)),
                rtol=1e-12,
            )


def test_batched_continuous_equals_core_for_every_method(native_backend):
    scores, sim = continuous(7, n=30, batch=4)
    # every rule the registry gives an on-device loop, and the objective's greedy
    native_rules = [m.cls() for m in METHODS if m.kind == "rule" and m.native is not None]
    for objective in [Objective(), *native_rules]:
        with native_backend.use_route("loop"):
            batched = tops_core.select(
                native_backend.array(scores), native_backend.array(sim), 12, objective=objective
            )
        # "auto" on a device is greedy: same answer as the core's, greedy's certificate.
        method = "greedy" if isinstance(objective, Objective) else "auto"
        core = tops_core.select(scores, sim, 12, objective=objective, method=method)
        np.testing.assert_array_equal(native_backend.numpy(batched.order), core.order)
        np.testing.assert_allclose(native_backend.numpy(batched.value), core.value, rtol=1e-9)
        np.testing.assert_allclose(native_backend.numpy(batched.upper_bound), core.upper_bound, rtol=1e-6)


def test_certificate_equals_core_across_bound_chunks(native_backend):
    # k + 1 = 81 bound snapshots: more than one chunk of the loops' online bound (64).
    scores, sim = continuous(9, n=160, dim=32)
    for method in ("auto", "greedy"):
        with native_backend.use_route("loop"):
            sel = tops_core.select(
                native_backend.array(scores, "float32"),
                native_backend.array(sim, "float32"),
                80,
                method=method,
            )
        core = tops_core.select(scores.astype(np.float32), sim.astype(np.float32), 80, method="greedy")
        np.testing.assert_array_equal(native_backend.numpy(sel.order), core.order)
        assert float(sel.value) <= float(sel.upper_bound)
        np.testing.assert_allclose(float(sel.upper_bound), core.upper_bound, rtol=1e-5)


@pytest.mark.parametrize("route", ["auto", "loop"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32(native_backend, dtype, route):
    scores, sim = continuous(5, n=24)
    half_scores, half_sim = native_backend.array(scores, dtype), native_backend.array(sim, dtype)
    with native_backend.use_route(route):
        sel = tops_core.select(half_scores, half_sim, 10)
    core = tops_core.select(native_backend.numpy(half_scores), native_backend.numpy(half_sim), 10)
    np.testing.assert_array_equal(native_backend.numpy(sel.order), core.order)
    assert sel.gains.dtype == native_backend.dtype("float64")
    assert sel.value.dtype == native_backend.dtype("float64")
    np.testing.assert_allclose(native_backend.numpy(sel.value), core.value, rtol=1e-6)


def test_integer_inputs_are_computed_in_float64(native_backend):
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 5, (10, 10))
    sim = np.triu(sim) + np.triu(sim, 1).T
    scores = rng.integers(0, 9, 10)
    sel = tops_core.select(
        native_backend.array(scores), native_backend.array(sim), 5, objective=Objective(focus=0.0)
    )
    core = tops_core.select(scores, sim, 5, objective=Objective(focus=0.0))
    np.testing.assert_array_equal(native_backend.numpy(sel.order), core.order)
    assert sel.value.dtype == native_backend.dtype("float64")


def test_mixed_real_dtypes_are_promoted(native_backend):
    scores, sim = continuous(6, n=12)
    half = native_backend.array(scores, "float16")
    sel = tops_core.select(half, native_backend.array(sim), 4)
    core = tops_core.select(native_backend.numpy(half).astype(np.float64), sim, 4)
    np.testing.assert_array_equal(native_backend.numpy(sel.order), core.order)


@pytest.mark.parametrize("route", ["auto", "loop"])
def test_inputs_not_mutated(native_backend, route):
    scores, sim = continuous(2, n=16, batch=2)
    b_scores, b_sim = native_backend.array(scores), native_backend.array(sim)
    for objective in [Objective(), TOPSRule(), DPP(), DivPrune()]:
        with native_backend.use_route(route):
            tops_core.select(b_scores, b_sim, 6, objective=objective)
    np.testing.assert_array_equal(native_backend.numpy(b_scores), scores)
    np.testing.assert_array_equal(native_backend.numpy(b_sim), sim)


@pytest.mark.parametrize(
    "objective, method",
    [
        (Objective(), "stochastic"),
        (Objective(), "exact"),
        (SCOPE(), "auto"),
    ],
)
def test_methods_without_native_loop_say_host(native_backend, objective, method):
    scores, sim = continuous(4, n=12)
    with native_backend.use_route("loop"):  # as on a GPU: no loop for these methods, a host copy
        sel = tops_core.select(
            native_backend.array(scores), native_backend.array(sim), 4, objective=objective, method=method
        )
    core = tops_core.select(scores, sim, 4, objective=objective, method=method)
    assert sel.method == core.method + "+host"
    assert native_backend.is_array(sel.order) and sel.order.dtype == native_backend.dtype("int64")
    np.testing.assert_array_equal(native_backend.numpy(sel.order), core.order)
    # Host memory (CPU tensors, unified memory): the core on a view, no host copy to report.
    view = tops_core.select(
        native_backend.array(scores), native_backend.array(sim), 4, objective=objective, method=method
    )
    assert view.method == core.method
    np.testing.assert_array_equal(native_backend.numpy(view.order), core.order)


# ------------------------------------------------------------------ errors
_SYM = np.array([[1.0, 0.5], [0.5, 1.0]], dtype=np.float32)
_ASYM = np.array([[1.0, 0.0], [0.5, 1.0]], dtype=np.float32)
_ONES = np.ones(2, dtype=np.float32)
BAD_INPUTS = [
    ("negative sim", _ONES, _SYM - 0.75, 1, None),
    ("nan score", np.array([1.0, np.nan], dtype=np.float32), _SYM, 1, None),
    ("inf sim", _ONES, _SYM * np.inf, 1, None),
    ("asymmetric for a rule", _ONES, _ASYM, 1, TOPSRule()),
    ("asymmetric for DivPrune", _ONES, _ASYM, 1, DivPrune()),
    ("asymmetric with redundancy", _ONES, _ASYM, 1, Objective(redundancy=1.0)),
    ("negative scores with focus", np.array([-1.0, 1.0], dtype=np.float32), _SYM, 1, None),
    ("k too large", _ONES, _SYM, 3, None),
    ("nan and k too large", np.array([1.0, np.nan], dtype=np.float32), _SYM, 3, None),
    ("k not an integer", _ONES, _SYM, 1.0, None),
    ("sim not square", _ONES, np.ones((2, 3), dtype=np.float32), 1, None),
    ("scores 3-d", np.ones((1, 2, 2), dtype=np.float32), np.ones((1, 2, 2, 2), dtype=np.float32), 1, None),
    ("batch mismatch", np.ones((2, 2), dtype=np.float32), np.ones((3, 2, 2), dtype=np.float32), 1, None),
    ("empty with k > 0", np.ones(0, dtype=np.float32), np.ones((0, 0), dtype=np.float32), 1, None),
    ("bool dtype", np.ones(2, dtype=bool), np.ones((2, 2), dtype=bool), 1, None),
]


@pytest.mark.parametrize("route", ["auto", "loop"])
@pytest.mark.parametrize("case, scores, sim, k, objective", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_the_core_error(native_backend, case, scores, sim, k, objective, route):
    """The adapter raises the core's own error, naming the framework's arrays (shape, dtype, device)."""
    with pytest.raises(tops_core.InvalidInputError) as core_error:
        tops_core.select(scores, sim, k, objective=objective)
    b_scores, b_sim = native_backend.array(scores), native_backend.array(sim)
    with native_backend.use_route(route), pytest.raises(tops_core.InvalidInputError) as error:
        tops_core.select(b_scores, b_sim, k, objective=objective)
    numpy_names = {
        native_backend.describe(b_scores): f"shape {scores.shape}, dtype {scores.dtype}",
        native_backend.describe(b_sim): f"shape {sim.shape}, dtype {sim.dtype}",
    }
    message = str(error.value)
    for framework_name, numpy_name in numpy_names.items():
        message = message.replace(framework_name, numpy_name)
    assert message == str(core_error.value)
    assert any(name in str(error.value) for name in numpy_names) or "k " in str(error.value)


def test_mixed_dtypes_that_do_not_promote_name_both_sides(native_backend):
    scores, sim = native_backend.array(_ONES), native_backend.array(_SYM, "complex64")
    with pytest.raises(tops_core.InvalidInputError, match="real dtypes") as info:
        tops_core.select(scores, sim, 1)
    assert "float32" in str(info.value) and "complex64" in str(info.value)


def test_mixed_frameworks_name_both_sides(native_backend):
    with pytest.raises(tops_core.InvalidInputError, match="same framework") as info:
        tops_core.select(native_backend.array(_ONES), _SYM, 1)
    assert native_backend.describe(native_backend.array(_ONES)) in str(info.value)
