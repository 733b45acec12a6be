"""PyTorch adapter: answers equal the core's on every route, on the device, without host syncs.

On CPU tensors the default route is the core on a zero-copy view; the
on-device loops (the CUDA route and the Triton kernel's reference) run here
with ``use_route("loop")``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from tops_adapters import _native, _native_solvers  # noqa: E402
from tops_adapters import torch as torch_adapter  # noqa: E402

import tops_core  # noqa: E402
from tops_core import DPP, SCOPE, DivPrune, Objective, TopK, TOPSRule  # noqa: E402
from tops_core.api import _select_numpy, resolve  # noqa: E402
from tops_core.testing import GRID, problems  # noqa: E402

# focus = 0 keeps the coverage weights at 1: with focus > 0 they are r_j / mean(r),
# not dyadic, and float32 sums of them are not exact (the core sums in float64).
_weight = st.integers(0, 8).map(lambda v: v * GRID)
exact_objectives = st.builds(Objective, relevance=_weight, coverage=_weight, redundancy=_weight,
                             focus=st.just(0.0))
exact_rules = st.sampled_from([TopK(), DivPrune(), DivPrune(seed="relevance")])
# TOPSRule divides by means: its scores are exact in float64 (tiny dyadic sums), not in float32.
float64_rules = st.sampled_from([TOPSRule(), TOPSRule(norm="minmax"), TOPSRule(alpha=0.0),
                                 TOPSRule(lam=0.0)])
REFERENCE = Objective(focus=0.0)


def _assert_same(native, core, batched=False):
    assert native.method == core.method
    assert not native.method.endswith("+host")
    assert native.order.dtype == torch.int64 and native.indices.dtype == torch.int64
    assert native.gains.dtype == torch.float64
    np.testing.assert_array_equal(native.order.numpy(), core.order)
    np.testing.assert_array_equal(native.indices.numpy(), core.indices)
    np.testing.assert_allclose(native.gains.numpy(), core.gains, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(native.value.numpy(), core.value, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(native.upper_bound.numpy(), core.upper_bound, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(native.optimal.numpy(), core.optimal)


def _both(scores, sim, k, objective, method="auto", dtype=torch.float32, reference=REFERENCE, route="loop"):
    # The loop runs the objective's "auto" as greedy (the same answer as the core's "auto", with
    # greedy's certificate); the core route is the core itself, method names included.
    core_method = "greedy" if method == "auto" and route == "loop" else method
    core = tops_core.select(scores, sim, k, objective=objective, method=core_method, reference=reference)
    with torch_adapter.use_route(route):
        native = tops_core.select(torch.tensor(scores, dtype=dtype), torch.tensor(sim, dtype=dtype), k,
                                  objective=objective, method=method, reference=reference)
    return native, core


routes = st.sampled_from(["core", "loop"])


@settings(max_examples=60)
@given(problems(max_n=8), exact_objectives, st.sampled_from(["auto", "lazy", "greedy"]),
       st.sampled_from([torch.float32, torch.float64]), routes)
def test_objective_greedy_equals_core(problem, objective, method, dtype, route):
    scores, sim, k = problem
    _assert_same(*_both(scores, sim, k, objective, method, dtype, route=route))


@settings(max_examples=40)
@given(problems(max_n=8), exact_rules, st.sampled_from([torch.float32, torch.bfloat16]), exact_objectives,
       routes)
def test_exact_rules_equal_core(problem, rule, dtype, reference, route):
    scores, sim, k = problem  # multiples of 1/8 up to 2: exact in bfloat16 too
    # The reference objective certifies the rule's set: its gains, value and bound must match too.
    _assert_same(*_both(scores, sim, k, rule, dtype=dtype, reference=reference, route=route))


@settings(max_examples=40)
@given(problems(max_n=8), float64_rules, routes)
def test_tops_rule_equals_core_in_float64(problem, rule, route):
    scores, sim, k = problem
    _assert_same(*_both(scores, sim, k, rule, dtype=torch.float64, route=route))


def test_cpu_tensors_run_the_core_on_a_zero_copy_view(monkeypatch):
    """The default route on CPU tensors hands the core the tensors' own memory, and answers in tensors."""
    import tops_core.api

    seen = []
    original = tops_core.api._select_numpy

    def spy(scores, sim, *args, **kwargs):
        seen.append((scores, sim))
        return original(scores, sim, *args, **kwargs)

    monkeypatch.setattr(tops_core.api, "_select_numpy", spy)
    scores, sim = _continuous(0, n=24)
    t_scores, t_sim = torch.tensor(scores, dtype=torch.float32), torch.tensor(sim, dtype=torch.float32)
    sel = tops_core.select(t_scores, t_sim[:, :], 6)
    assert len(seen) == 1
    assert np.shares_memory(seen[0][0], t_scores.numpy()) and np.shares_memory(seen[0][1], t_sim.numpy())
    core = tops_core.select(scores.astype(np.float32), sim.astype(np.float32), 6)
    assert sel.method == core.method == "incremental"
    assert isinstance(sel.order, torch.Tensor) and sel.order.dtype == torch.int64
    assert sel.value.shape == () and sel.value.dtype == torch.float64 and sel.optimal.dtype == torch.bool
    np.testing.assert_array_equal(sel.order.numpy(), core.order)
    assert float(sel.value) == core.value and float(sel.upper_bound) == core.upper_bound


def test_forced_routes_that_cannot_run_say_why(monkeypatch):
    scores, sim = torch.ones(3), torch.eye(3)
    with pytest.raises(tops_core.InvalidInputError, match="route must be one of"):
        with torch_adapter.use_route("gpu"):
            pass
    refused = pytest.raises(tops_core.InvalidInputError, match="route 'triton'")
    with torch_adapter.use_route("triton"), refused:
        tops_core.select(scores, sim, 1, objective=TopK())
    with pytest.raises(tops_core.InvalidInputError, match="meta tensor"):  # refused before any route
        tops_core.select(torch.ones(3, device="meta"), torch.ones(3, 3, device="meta"), 1)
    monkeypatch.setattr(type(torch_adapter._TORCH), "host_view", lambda self, x: None)  # as on a GPU
    with torch_adapter.use_route("core"), pytest.raises(tops_core.InvalidInputError, match="host memory"):
        tops_core.select(scores, sim, 1)


def _continuous(seed, n=40, dim=64, batch=None):
    """Cosine similarities of random features (full rank for n <= dim): no near-ties."""
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    feats = rng.normal(size=(*lead, n, dim))
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    sim = (1 + feats @ np.swapaxes(feats, -1, -2)) / 2
    return rng.random((*lead, n)), sim


@pytest.mark.parametrize("rule", [DPP(), DPP(quality="raw"), TOPSRule(), TOPSRule(norm="minmax")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(4))
def test_division_rules_equal_core_with_clear_gaps(rule, dtype, seed):
    scores, sim = _continuous(seed)
    native, core = _both(scores, sim, 24, rule, dtype=dtype, route="loop")
    np.testing.assert_array_equal(native.order.numpy(), core.order)
    np.testing.assert_allclose(native.value.numpy(), core.value, rtol=1e-5)


@settings(max_examples=25)
@given(problems(max_n=7, batch=3),
       st.sampled_from([Objective(focus=0.0), Objective(relevance=0.5, redundancy=0.25, focus=0.0),
                        TopK(), DivPrune(), TOPSRule()]),
       st.sampled_from(["auto", "greedy"]))
def test_batched_equals_row_by_row(problem, objective, method):
    scores, sim, k = problem
    t_scores, t_sim = torch.tensor(scores), torch.tensor(sim)
    with torch_adapter.use_route("loop"):
        batched = tops_core.select(t_scores, t_sim, k, objective=objective, method=method)
    assert batched.order.shape == (3, k) and batched.value.shape == (3,)
    for b in range(3):
        with torch_adapter.use_route("loop"):
            row = tops_core.select(t_scores[b], t_sim[b], k, objective=objective, method=method)
        assert torch.equal(batched.order[b], row.order)
        assert torch.equal(batched.indices[b], row.indices)
        assert torch.allclose(batched.gains[b], row.gains)
        assert torch.allclose(batched.value[b], row.value)
        assert torch.allclose(batched.upper_bound[b], row.upper_bound)


def test_batched_continuous_all_methods():
    scores, sim = _continuous(7, n=30, batch=4)
    for objective in [Objective(), TOPSRule(), DPP(), DivPrune(), TopK()]:
        with torch_adapter.use_route("loop"):
            batched = tops_core.select(torch.tensor(scores), torch.tensor(sim), 12, objective=objective)
        # "auto" on a device is greedy: same answer as the core's, greedy's certificate.
        method = "greedy" if isinstance(objective, Objective) else "auto"
        core = tops_core.select(scores, sim, 12, objective=objective, method=method)
        np.testing.assert_array_equal(batched.order.numpy(), core.order)
        np.testing.assert_allclose(batched.value.numpy(), core.value, rtol=1e-9)
        np.testing.assert_allclose(batched.upper_bound.numpy(), core.upper_bound, rtol=1e-6)


_SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def no_host_sync(monkeypatch):
    """Make every tensor -> host conversion raise while a native loop runs."""
    active = [False]

    def guard(name, original):
        def patched(self, *args, **kwargs):
            if active[0]:
                raise AssertionError(f"host sync Tensor.{name}() inside a native selection")
            return original(self, *args, **kwargs)
        return patched

    for name in _SYNCS:
        monkeypatch.setattr(torch.Tensor, name, guard(name, getattr(torch.Tensor, name)))

    def watched(function):
        def run(*args, **kwargs):
            active[0] = True
            try:
                return function(*args, **kwargs)
            finally:
                active[0] = False
        return run

    for name in ("objective_greedy", "rule_order", "certify_order"):
        monkeypatch.setattr(_native_solvers, name, watched(getattr(_native_solvers, name)))
    monkeypatch.setattr(_native, "_assemble", watched(_native._assemble))
    return active


@pytest.mark.parametrize("objective, method", [
    (Objective(), "auto"), (Objective(), "greedy"),
    (Objective(relevance=0.5, redundancy=0.1), "lazy"),
    (TOPSRule(), "auto"), (TopK(), "auto"), (DivPrune(), "auto"), (DPP(), "auto"),
])
def test_no_host_sync_in_the_loop(no_host_sync, objective, method):
    scores, sim = _continuous(3, n=20, batch=2)
    with torch_adapter.use_route("loop"):
        sel = tops_core.select(torch.tensor(scores, dtype=torch.float32),
                               torch.tensor(sim, dtype=torch.float32), 8, objective=objective, method=method)
    assert not no_host_sync[0]
    assert not sel.method.endswith("+host")
    # The guard is live: the same call outside the watched functions does convert.
    core = tops_core.select(scores, sim, 8, objective=objective, method=method)
    np.testing.assert_array_equal(sel.order.numpy(), core.order)
    assert sel.method == ("greedy" if method == "auto" and isinstance(objective, Objective) else core.method)


def test_guard_catches_a_sync(no_host_sync):
    no_host_sync[0] = True
    with pytest.raises(AssertionError, match="host sync"):
        torch.ones(1).item()
    no_host_sync[0] = False


@pytest.mark.parametrize("route", ["auto", "loop"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype, route):
    scores, sim = _continuous(5, n=24)
    half_scores, half_sim = torch.tensor(scores, dtype=dtype), torch.tensor(sim, dtype=dtype)
    with torch_adapter.use_route(route):
        sel = tops_core.select(half_scores, half_sim, 10)
    core = tops_core.select(half_scores.float().numpy(), half_sim.float().numpy(), 10)
    np.testing.assert_array_equal(sel.order.numpy(), core.order)
    assert sel.gains.dtype == torch.float64 and sel.value.dtype == torch.float64
    np.testing.assert_allclose(sel.value.numpy(), core.value, rtol=1e-6)


@pytest.mark.parametrize("route", ["auto", "loop"])
def test_requires_grad_leaves_no_graph(route):
    scores, sim = _continuous(1, n=16)
    t_scores = torch.tensor(scores, requires_grad=True)
    t_sim = torch.tensor(sim, requires_grad=True)
    for objective in [Objective(), TOPSRule(), DPP()]:
        with torch_adapter.use_route(route):
            sel = tops_core.select(t_scores, t_sim, 6, objective=objective)
        for field in (sel.gains, sel.value, sel.upper_bound):
            assert not field.requires_grad and field.grad_fn is None


@pytest.mark.parametrize("route", ["auto", "loop"])
def test_inputs_not_mutated(route):
    scores, sim = _continuous(2, n=16, batch=2)
    t_scores, t_sim = torch.tensor(scores), torch.tensor(sim)
    before = (t_scores.clone(), t_sim.clone())
    for objective in [Objective(), TOPSRule(), DPP(), DivPrune()]:
        with torch_adapter.use_route(route):
            tops_core.select(t_scores, t_sim, 6, objective=objective)
    assert torch.equal(before[0], t_scores) and torch.equal(before[1], t_sim)


@pytest.mark.parametrize("objective, method", [
    (Objective(), "stochastic"), (Objective(), "exact"), (SCOPE(), "auto"),
])
def test_methods_without_native_loop_say_host(objective, method):
    scores, sim = _continuous(4, n=12)
    with torch_adapter.use_route("loop"):  # as on a GPU: no loop for these methods, a host copy
        sel = tops_core.select(torch.tensor(scores), torch.tensor(sim), 4, objective=objective, method=method)
    core = tops_core.select(scores, sim, 4, objective=objective, method=method)
    assert sel.method == core.method + "+host"
    on_cpu = tops_core.select(torch.tensor(scores), torch.tensor(sim), 4, objective=objective, method=method)
    assert on_cpu.method == core.method  # CPU tensors: the core on a view, no host copy to report
    assert isinstance(sel.order, torch.Tensor) and sel.order.dtype == torch.int64
    np.testing.assert_array_equal(sel.order.numpy(), core.order)


def test_integer_inputs_are_computed_in_float64():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 5, (10, 10))
    sim = np.triu(sim) + np.triu(sim, 1).T
    scores = rng.integers(0, 9, 10)
    sel = tops_core.select(torch.tensor(scores), torch.tensor(sim), 5, objective=Objective(focus=0.0))
    core = tops_core.select(scores, sim, 5, objective=Objective(focus=0.0))
    np.testing.assert_array_equal(sel.order.numpy(), core.order)
    assert sel.value.dtype == torch.float64


# ------------------------------------------------------------------- errors
def _core_message(scores, sim, k, objective=None, method="auto"):
    """The core's own error for the host copy of the same input."""
    obj, solver = resolve(objective, method)
    with pytest.raises(tops_core.InvalidInputError) as info:
        _select_numpy(torch_adapter.to_numpy(scores), torch_adapter.to_numpy(sim), k, obj, solver, None,
                      scores_given=torch_adapter.describe(scores), sim_given=torch_adapter.describe(sim))
    return str(info.value)


_sym = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
BAD_INPUTS = [
    ("negative sim", torch.ones(2), _sym - 0.75, 1, None),
    ("nan score", torch.tensor([1.0, float("nan")]), _sym, 1, None),
    ("inf sim", torch.ones(2), _sym * float("inf"), 1, None),
    ("asymmetric for a rule", torch.ones(2), torch.tensor([[1.0, 0.0], [0.5, 1.0]]), 1, TOPSRule()),
    ("asymmetric with redundancy", torch.ones(2), torch.tensor([[1.0, 0.0], [0.5, 1.0]]), 1,
     Objective(redundancy=1.0)),
    ("negative scores with focus", torch.tensor([-1.0, 1.0]), _sym, 1, None),
    ("k too large", torch.ones(2), _sym, 3, None),
    ("nan and k too large", torch.tensor([1.0, float("nan")]), _sym, 3, None),
    ("k not an integer", torch.ones(2), _sym, 1.0, None),
    ("sim not square", torch.ones(2), torch.ones(2, 3), 1, None),
    ("scores 3-d", torch.ones(1, 2, 2), torch.ones(1, 2, 2, 2), 1, None),
    ("batch mismatch", torch.ones(2, 2), torch.ones(3, 2, 2), 1, None),
    ("empty with k > 0", torch.ones(0), torch.ones(0, 0), 1, None),
    ("bool dtype", torch.ones(2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool), 1, None),
]


@pytest.mark.parametrize("route", ["auto", "loop"])
@pytest.mark.parametrize("case, scores, sim, k, objective", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_the_core_error(case, scores, sim, k, objective, route):
    with torch_adapter.use_route(route), pytest.raises(tops_core.InvalidInputError) as info:
        tops_core.select(scores, sim, k, objective=objective)
    assert str(info.value) == _core_message(scores, sim, k, objective)
    assert "torch.Tensor with shape" in str(info.value) or "k " in str(info.value)


def test_mixed_devices_name_both_sides():
    with pytest.raises(tops_core.InvalidInputError, match="same device") as info:
        tops_core.select(torch.ones(2), torch.ones(2, 2, device="meta"), 1)
    assert "device cpu" in str(info.value) and "device meta" in str(info.value)


def test_mixed_dtypes_that_do_not_promote_name_both_sides():
    with pytest.raises(tops_core.InvalidInputError, match="real dtypes") as info:
        tops_core.select(torch.ones(2), torch.ones(2, 2, dtype=torch.complex64), 1)
    assert "torch.float32" in str(info.value) and "torch.complex64" in str(info.value)


def test_mixed_real_dtypes_are_promoted():
    scores, sim = _continuous(6, n=12)
    sel = tops_core.select(torch.tensor(scores, dtype=torch.float16), torch.tensor(sim), 4)
    core = tops_core.select(torch.tensor(scores, dtype=torch.float16).double().numpy(), sim, 4)
    np.testing.assert_array_equal(sel.order.numpy(), core.order)


def test_mixed_frameworks_name_both_sides():
    with pytest.raises(tops_core.InvalidInputError, match="same framework"):
        tops_core.select(torch.ones(2), np.ones((2, 2)), 1)


def test_certificate_equals_core_across_bound_chunks():
    # k + 1 = 81 bound snapshots: more than one chunk of _OnlineBound.CHUNK = 64.
    scores, sim = _continuous(9, n=160, dim=32)
    for method in ("auto", "greedy"):
        with torch_adapter.use_route("loop"):
            sel = tops_core.select(torch.tensor(scores, dtype=torch.float32),
                                   torch.tensor(sim, dtype=torch.float32), 80, method=method)
        core = tops_core.select(scores.astype(np.float32), sim.astype(np.float32), 80, method="greedy")
        np.testing.assert_array_equal(sel.order.numpy(), core.order)
        assert float(sel.value) <= float(sel.upper_bound)
        np.testing.assert_allclose(float(sel.upper_bound), core.upper_bound, rtol=1e-5)
