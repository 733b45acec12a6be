"""What only the MLX adapter has: the zero-copy core route on unified memory, one eval per loop step.

Runs on ``mlx[cpu]`` here; the same code runs on Metal. The answers themselves
are checked against the core for every framework in ``test_adapters.py``.
"""

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from backends import continuous  # noqa: E402
from tops_adapters import mlx as mlx_adapter  # noqa: E402

import tops_core  # noqa: E402


def test_default_route_runs_the_core_on_a_zero_copy_view(monkeypatch):
    import tops_core.api

    seen = []
    original = tops_core.api._select_numpy

    def spy(scores, sim, *args, **kwargs):
        seen.append((scores, sim))
        return original(scores, sim, *args, **kwargs)

    monkeypatch.setattr(tops_core.api, "_select_numpy", spy)
    scores, sim = continuous(0, n=24)
    m_scores, m_sim = mx.array(scores), mx.array(sim)
    sel = tops_core.select(m_scores, m_sim, 6)
    # The view reads the array's own buffer: NumPy's base is MLX's memoryview, not a copy.
    assert len(seen) == 1 and all(isinstance(view.base, memoryview) for view in seen[0])
    core = tops_core.select(scores.astype(np.float32), sim.astype(np.float32), 6)
    assert sel.method == core.method == "incremental"
    assert sel.order.dtype == mx.int64 and sel.gains.dtype == mx.float64 and sel.value.shape == ()
    np.testing.assert_array_equal(np.array(sel.order), core.order)
    assert float(sel.value) == core.value and float(sel.upper_bound) == core.upper_bound


def test_one_eval_per_step(monkeypatch):
    calls = []
    original = mx.eval

    def counting(*arrays):
        calls.append(len(arrays))
        return original(*arrays)

    monkeypatch.setattr(mx, "eval", counting)
    scores, sim = continuous(2, n=20)
    with mlx_adapter.use_route("loop"):
        tops_core.select(mx.array(scores), mx.array(sim), 7)
    assert len(calls) == 7 + 1  # one per step, one for the answer


@pytest.mark.parametrize("route", ["auto", "loop"])
def test_bfloat16_widened_for_the_core(route):
    scores, sim = continuous(3, n=12)
    b_scores, b_sim = mx.array(scores).astype(mx.bfloat16), mx.array(sim).astype(mx.bfloat16)
    with mlx_adapter.use_route(route):
        sel = tops_core.select(b_scores, b_sim, 4, method="stochastic")
    assert sel.method == ("stochastic" if route == "auto" else "stochastic+host")
    core = tops_core.select(
        np.array(b_scores.astype(mx.float32)), np.array(b_sim.astype(mx.float32)), 4, method="stochastic"
    )
    np.testing.assert_array_equal(np.array(sel.order), core.order)
