"""What only the PyTorch adapter has: the zero-copy core route, forced routes, no host sync, autograd.

The answers themselves are checked against the core for every framework in
``test_adapters.py``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backends import continuous  # noqa: E402
from tops_adapters import _native, _native_solvers  # noqa: E402
from tops_adapters import torch as torch_adapter  # noqa: E402

import tops_core  # noqa: E402
from tops_core import DPP, DivPrune, Objective, TopK, TOPSRule  # noqa: E402


def test_cpu_tensors_run_the_core_on_a_zero_copy_view(monkeypatch):
    """The default route on CPU tensors hands the core the tensors' own memory, and answers in tensors."""
    import tops_core.api

    seen = []
    original = tops_core.api._select_numpy

    def spy(scores, sim, *args, **kwargs):
        seen.append((scores, sim))
        return original(scores, sim, *args, **kwargs)

    monkeypatch.setattr(tops_core.api, "_select_numpy", spy)
    scores, sim = continuous(0, n=24)
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


@pytest.mark.parametrize(
    "objective, method",
    [
        (Objective(), "auto"),
        (Objective(), "greedy"),
        (Objective(relevance=0.5, redundancy=0.1), "lazy"),
        (TOPSRule(), "auto"),
        (TopK(), "auto"),
        (DivPrune(), "auto"),
        (DPP(), "auto"),
    ],
)
def test_no_host_sync_in_the_loop(no_host_sync, objective, method):
    scores, sim = continuous(3, n=20, batch=2)
    with torch_adapter.use_route("loop"):
        sel = tops_core.select(
            torch.tensor(scores, dtype=torch.float32),
            torch.tensor(sim, dtype=torch.float32),
            8,
            objective=objective,
            method=method,
        )
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
def test_requires_grad_leaves_no_graph(route):
    scores, sim = continuous(1, n=16)
    t_scores = torch.tensor(scores, requires_grad=True)
    t_sim = torch.tensor(sim, requires_grad=True)
    for objective in [Objective(), TOPSRule(), DPP()]:
        with torch_adapter.use_route(route):
            sel = tops_core.select(t_scores, t_sim, 6, objective=objective)
        for field in (sel.gains, sel.value, sel.upper_bound):
            assert not field.requires_grad and field.grad_fn is None


def test_mixed_devices_name_both_sides():
    with pytest.raises(tops_core.InvalidInputError, match="same device") as info:
        tops_core.select(torch.ones(2), torch.ones(2, 2, device="meta"), 1)
    assert "device cpu" in str(info.value) and "device meta" in str(info.value)
