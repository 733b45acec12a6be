"""Fuzz the public surface: every input gives a valid, certified answer or a clear error.

Any scores, sim (dense or :class:`~tops_core.Features`), k, objective, rule,
solver and reference, of any dtype, shape, magnitude (subnormal to 1e308),
NaN/inf placement and framework, either returns a valid ``Selection`` (``k``
distinct indices in range, ascending; ``order`` a permutation of them; finite
``value <= upper_bound``; the float64 answer where the values are exact) or
raises ``InvalidInputError`` with a short message that names the argument.
Never another exception, never a warning (a silent overflow shows as one),
never a mutated input.

A bounded run is part of the normal test suite; ``make fuzz``
(``HYPOTHESIS_PROFILE=fuzz``) runs many more examples.
"""

import importlib
import os
import warnings

import numpy as np
import pytest
from backends import installed
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tops_core
from tops_core import (
    DPP,
    SCOPE,
    DivPrune,
    Exact,
    Features,
    Incremental,
    InvalidInputError,
    Objective,
    Stochastic,
    TopK,
    TOPSRule,
)

FUZZ = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
EXAMPLES = settings.default.max_examples if FUZZ else 300

#: Words one of which every message must contain: the argument it is about.
ARGUMENTS = (
    "scores",
    "sim",
    "k ",
    "k must",
    "indices",
    "objective",
    "method",
    "reference",
    "features",
    "seed",
    "epsilon",
    "time_limit",
    "max_n",
    "relevance",
    "coverage",
    "redundancy",
    "focus",
    "alpha",
    "lam",
    "norm",
    "power",
    "quality",
    "Features",
)

# The installed frameworks (MLX runs on Apple silicon and, CPU only, on Linux).
FRAMEWORKS = ["numpy"] + [
    name for name, module in (("torch", "torch"), ("mlx", "mlx.core")) if installed(module)
]
mx = importlib.import_module("mlx.core") if "mlx" in FRAMEWORKS else None

#: Magnitudes the values are scaled to (dyadic: exact in every float dtype).
SCALES = [
    1.0,
    2.0**-1074,
    2.0**-149,
    2.0**-1000,
    2.0**-30,
    2.0**30,
    2.0**100,
    2.0**127,
    2.0**500,
    2.0**1000,
    2.0**1023,
]
DTYPES = ["float64", "float64", "float32", "float32", "float16", "int64", "uint8", "bool", "complex64"]


@st.composite
def arrays(draw, shape):
    """Non-negative dyadic values (multiples of 1/8 in [0, 1]) scaled, with specials placed."""
    size = int(np.prod(shape))
    grid = np.array(draw(st.lists(st.integers(0, 8), min_size=size, max_size=size)), dtype=np.float64) / 8
    x = grid.reshape(shape) * draw(st.sampled_from(SCALES))
    if size and draw(st.integers(0, 15)) == 0:
        special = draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, -(2.0**-1074), 1.7e308]))
        x.flat[draw(st.integers(0, size - 1))] = special
    return x


def _symmetrise(x):
    return np.maximum(x, np.swapaxes(x, -1, -2))  # a max is exact: symmetric bit for bit


@st.composite
def problems(draw):
    batch = draw(st.sampled_from([None, None, None, 0, 1, 2]))
    n = draw(st.integers(0, 7))
    lead = () if batch is None else (batch,)
    scores = draw(arrays((*lead, n)))
    sim = draw(arrays((*lead, n, n)))
    if draw(st.integers(0, 3)):
        sim = _symmetrise(sim)
    if draw(st.integers(0, 15)) == 0:  # a wrong shape
        with np.errstate(over="ignore"):
            sim = sim[..., : max(n - 1, 0)] if draw(st.booleans()) else sim.sum(axis=-1)
    k = draw(
        st.one_of(
            st.integers(-1, n + 1),
            st.integers(0, n),
            st.integers(0, n),
            st.integers(0, n),
            st.sampled_from([2.0, True, "2", None, [1] * 10_000, 10**400, np.int32(1)]),
        )
    )
    return scores, sim, k


@st.composite
def features_problems(draw):
    n = draw(st.integers(0, 7))
    d = draw(st.integers(0, 4))
    a, b = draw(arrays((n, d))), draw(arrays((n, d)))
    with np.errstate(invalid="ignore"):
        x = a - b  # signed features (inf - inf: NaN, one more special)
    scores = draw(arrays((n,)))
    return scores, x, draw(st.integers(-1, n + 1))


weights = st.sampled_from([0.0, 0.5, 1.0, 3.0, 1e300, 1.7e308, 2.0**-1074])
objectives = st.one_of(
    st.none(),
    st.builds(
        Objective,
        relevance=weights,
        coverage=weights,
        redundancy=weights,
        focus=st.sampled_from([0.0, 0.5, 1.0]),
    ),
    st.builds(
        Objective,
        relevance=weights,
        coverage=weights,
        redundancy=weights,
        focus=st.sampled_from([0.0, 0.5, 1.0]),
    ),
    st.builds(TOPSRule, alpha=weights, lam=weights, norm=st.sampled_from(["mean", "minmax"])),
    st.just(TopK()),
    st.builds(DivPrune, seed=st.sampled_from(["isolated", "relevance"])),
    st.builds(SCOPE, power=st.sampled_from([0.0, 1.0, 2.5])),
    st.builds(DPP, quality=st.sampled_from(["minmax", "raw"])),
    st.just("tops"),
)
rule_methods = st.sampled_from(["auto", "auto", "greedy", "lazy"])
methods = st.one_of(
    st.sampled_from(["auto", "greedy", "lazy", "incremental", "stochastic", "exact", "lazzy"]),
    st.builds(Stochastic, epsilon=st.sampled_from([0.5, 0.01, 1e-300]), seed=st.integers(0, 2**70)),
    st.builds(Exact, time_limit=st.sampled_from([10.0, 1e-9])),
    st.builds(Incremental, symmetric=st.booleans()),
)
references = st.one_of(
    st.none(), st.builds(Objective, redundancy=st.sampled_from([0.0, 1.0]), focus=st.sampled_from([0.0, 0.5]))
)


def _as(framework, x, dtype):
    """``x`` (float64) in ``framework`` and ``dtype`` (values cast as that dtype casts them)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = np.asarray(x).astype(dtype)
        if framework == "mlx" and a.dtype == np.float64:  # MLX has no float64 on the GPU
            a = a.astype(np.float32)
    if framework == "torch":
        import torch

        return torch.from_numpy(a.copy())
    return mx.array(a) if framework == "mlx" else a


def _snapshot(x):
    if isinstance(x, Features):
        return ("features", x.unit.copy())
    if mx is not None and isinstance(x, mx.array):
        return np.array(x)
    if hasattr(x, "detach"):
        return x.detach().clone()
    return np.array(x, copy=True) if isinstance(x, np.ndarray) else x


def _same(a, b):
    if isinstance(a, tuple):
        return np.array_equal(a[1], b.unit, equal_nan=True)
    if hasattr(a, "detach"):
        return np.array_equal(
            a.numpy(), b.detach().numpy(), equal_nan=a.dtype.is_floating_point or a.dtype.is_complex
        )
    if isinstance(a, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=a.dtype.kind in "fc")
    return True


def _np(x):
    if mx is not None and isinstance(x, mx.array):
        return np.array(x)
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_answer(sel, n, k, batch):
    idx, order = _np(sel.indices), _np(sel.order)
    rows = 1 if batch is None else batch
    assert idx.shape == order.shape == ((k,) if batch is None else (batch, k))
    idx, order = idx.reshape(rows, k), order.reshape(rows, k)
    for b in range(rows):
        assert idx[b].tolist() == sorted(set(idx[b].tolist()))  # distinct, ascending
        assert sorted(order[b].tolist()) == idx[b].tolist()
        assert all(0 <= i < n for i in idx[b].tolist())
    value, bound = _np(sel.value).astype(np.float64), _np(sel.upper_bound).astype(np.float64)
    assert np.isfinite(value).all() and np.isfinite(bound).all()
    assert (value <= bound).all()


def _run(call, inputs):
    before = [_snapshot(x) for x in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow or invalid value must not pass silently
        try:
            sel = call()
        except InvalidInputError as exc:
            msg = str(exc)
            assert len(msg) < 500, msg[:600]
            assert any(a in msg for a in ARGUMENTS), msg
            event("refused: " + msg.split(" ")[0])
            sel = None
        else:
            event("answered")
    for x, b in zip(inputs, before):
        assert _same(b, x), "an input was modified"
    return sel


def _build(factory):
    """Build a parameter object; construction may refuse with a clear error."""
    try:
        return factory()
    except InvalidInputError as exc:
        assert len(str(exc)) < 500
        return None


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    problem=problems(),
    framework=st.sampled_from(FRAMEWORKS),
    dtype=st.sampled_from(DTYPES),
    sim_dtype=st.sampled_from([None, None, "float32", "float64", "int64"]),
    objective=objectives,
    method=methods,
    rule_method=rule_methods,
    reference=references,
)
def test_select_answers_validly_or_names_the_argument(
    problem, framework, dtype, sim_dtype, objective, method, rule_method, reference
):
    scores64, sim64, k = problem
    if isinstance(objective, (TOPSRule, TopK, DivPrune, SCOPE, DPP)):
        method = rule_method  # mostly a method rules accept
    scores = _as(framework, scores64, dtype)
    sim = _as(framework, sim64, sim_dtype or dtype)
    sel = _run(
        lambda: tops_core.select(scores, sim, k, objective=objective, method=method, reference=reference),
        [scores, sim],
    )
    if sel is None:
        return
    batch = scores64.shape[0] if scores64.ndim == 2 else None
    _check_answer(sel, scores64.shape[-1], int(k), batch)
    # Where the given values are exactly those of the float64 problem, so is the answer.
    if (
        framework != "mlx"
        and dtype in ("float32", "float16")
        and sim_dtype in (None, dtype)
        and np.array_equal(_np(scores).astype(np.float64), scores64)
        and np.array_equal(_np(sim).astype(np.float64), sim64)
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ref = tops_core.select(
                    scores64, sim64, k, objective=objective, method=method, reference=reference
                )
        except InvalidInputError as exc:
            # Symmetry is checked within the dtype's rounding (16 eps of the largest entry):
            # float64 may see an asymmetry that float32 forgives.
            assert "symmetric" in str(exc)
            return
        np.testing.assert_array_equal(_np(sel.order), _np(ref.order))


@settings(max_examples=max(EXAMPLES // 3, 20), suppress_health_check=[HealthCheck.too_slow])
@given(
    problem=features_problems(),
    framework=st.sampled_from(FRAMEWORKS),
    dtype=st.sampled_from(["float64", "float32", "float16", "int64"]),
    shift=st.booleans(),
    objective=st.one_of(st.none(), objectives),
    method=methods,
)
def test_features_answer_validly_or_name_the_argument(problem, framework, dtype, shift, objective, method):
    scores64, x64, k = problem
    scores = _as(framework, scores64, "float64" if framework != "mlx" else "float32")
    x = _as(framework, x64, dtype)
    feats = _run(lambda: Features(x, shift=shift), [x])
    if feats is None:
        return
    sel = _run(
        lambda: tops_core.select(scores, feats, k, objective=objective, method=method), [scores, feats]
    )
    if sel is not None:
        _check_answer(sel, x64.shape[0], k, None)
        assert type(sel.indices).__module__.split(".")[0] == type(scores).__module__.split(".")[0]


@settings(max_examples=max(EXAMPLES // 3, 20), suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.integers(0, 5).flatmap(lambda n: st.integers(0, 4).flatmap(lambda d: arrays((n, d)))),
    dtype=st.sampled_from(["float64", "float32", "float16", "int64", "bool"]),
    shift=st.booleans(),
)
def test_cosine_answers_in_range_or_names_the_argument(x, dtype, shift):
    arr = _as("numpy", x, dtype)
    cos = _run(lambda: tops_core.cosine(arr, shift=shift), [arr])
    if cos is not None:
        assert np.isfinite(cos).all() and np.array_equal(cos, cos.T)
        assert cos.min(initial=0) >= (0 if shift else -1) and cos.max(initial=0) <= 1


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Stochastic(seed=-1),
        lambda: Stochastic(seed=1.5),
        lambda: Stochastic(epsilon=0),
        lambda: Exact(time_limit=0),
        lambda: Exact(time_limit=-1),
        lambda: Exact(max_n=0),
        lambda: Objective(coverage=float("nan")),
        lambda: Objective(focus=2),
        lambda: TOPSRule(norm="x" * 10**5),
        lambda: Objective(relevance=10**400),
    ],
)
def test_bad_parameters_are_refused_at_construction(factory):
    with pytest.raises(InvalidInputError) as info:
        factory()
    assert len(str(info.value)) < 500


@settings(max_examples=max(EXAMPLES // 3, 20), suppress_health_check=[HealthCheck.too_slow])
@given(
    problem=problems(),
    dtype=st.sampled_from(DTYPES),
    objective=objectives,
    indices=st.lists(st.integers(-1, 8), max_size=4),
)
def test_objective_value_and_gains_answer_or_name_the_argument(problem, dtype, objective, indices):
    scores64, sim64, _ = problem
    if not isinstance(objective, Objective):
        objective = Objective()
    scores, sim = _as("numpy", scores64, dtype), _as("numpy", sim64, dtype)
    value = _run(lambda: objective.value(scores, sim, indices), [scores, sim])
    if value is not None:
        assert np.isfinite(value)
    gains = _run(lambda: objective.gains(scores, sim, indices), [scores, sim])
    if gains is not None:
        assert gains.shape == scores64.shape and np.isfinite(gains).all()
