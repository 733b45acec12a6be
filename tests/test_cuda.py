"""CUDA: the native loops on the GPU give the CPU's answers without a host sync (skipped without a GPU)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tops_adapters import _native_solvers, triton_kernels  # noqa: E402
from tops_adapters import torch as torch_adapter  # noqa: E402

import tops_core  # noqa: E402
from tops_core import DPP, DivPrune, Objective, TopK, TOPSRule  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

METHODS = [
    (Objective(), "auto"),
    (Objective(), "greedy"),
    (Objective(relevance=0.5, redundancy=0.1), "lazy"),
    (TOPSRule(), "auto"),
    (TopK(), "auto"),
    (DivPrune(), "auto"),
    (DPP(), "auto"),
]


def _continuous(seed, n=64, dim=96, batch=None):
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    feats = rng.normal(size=(*lead, n, dim))
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    return rng.random((*lead, n)), (1 + feats @ np.swapaxes(feats, -1, -2)) / 2


@pytest.mark.parametrize("objective, method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_equals_core(objective, method, dtype):
    scores, sim = _continuous(0, batch=3)
    sel = tops_core.select(
        torch.tensor(scores, dtype=dtype, device="cuda"),
        torch.tensor(sim, dtype=dtype, device="cuda"),
        24,
        objective=objective,
        method=method,
    )
    assert sel.order.device.type == "cuda" and sel.order.dtype == torch.int64
    assert sel.value.device.type == "cuda" and sel.value.dtype == torch.float64
    assert not sel.method.endswith("+host")
    # With Triton installed the objective's methods run the fused kernel with the core's certificate
    # of that method ("auto": the core's Incremental), and so does TOPSRule; without it the loop runs
    # "auto" as greedy (the same answer, greedy's certificate).
    fused = triton_kernels.available()
    core_method = "greedy" if isinstance(objective, Objective) and method == "auto" and not fused else method
    named = core_method if isinstance(objective, Objective) else objective.name
    assert sel.method == ("incremental" if fused and named == "auto" else named)
    core = tops_core.select(scores, sim, 24, objective=objective, method=core_method)
    np.testing.assert_array_equal(sel.order.cpu().numpy(), core.order)
    np.testing.assert_allclose(sel.value.cpu().numpy(), core.value, rtol=1e-5)
    np.testing.assert_allclose(sel.upper_bound.cpu().numpy(), core.upper_bound, rtol=1e-5)


@pytest.mark.parametrize("objective, method", METHODS)
def test_cuda_loops_never_sync(monkeypatch, objective, method):
    """``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronising call."""

    def strict(function):
        def run(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return function(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")

        return run

    for name in ("objective_greedy", "rule_order", "certify_order"):
        monkeypatch.setattr(_native_solvers, name, strict(getattr(_native_solvers, name)))
    # The fused kernels never sync; the one read of their near-tie flags comes after them.
    monkeypatch.setattr(triton_kernels, "incremental_greedy", strict(triton_kernels.incremental_greedy))
    monkeypatch.setattr(triton_kernels, "tops_rule_order", strict(triton_kernels.tops_rule_order))
    scores, sim = _continuous(1, batch=2)
    sel = tops_core.select(
        torch.tensor(scores, dtype=torch.float32, device="cuda"),
        torch.tensor(sim, dtype=torch.float32, device="cuda"),
        16,
        objective=objective,
        method=method,
    )
    assert sel.order.shape == (2, 16)


def test_cuda_bfloat16_and_mixed_devices():
    scores, sim = _continuous(2)
    b_scores = torch.tensor(scores, dtype=torch.bfloat16, device="cuda")
    b_sim = torch.tensor(sim, dtype=torch.bfloat16, device="cuda")
    sel = tops_core.select(b_scores, b_sim, 16)
    core = tops_core.select(b_scores.float().cpu().numpy(), b_sim.float().cpu().numpy(), 16)
    np.testing.assert_array_equal(sel.order.cpu().numpy(), core.order)
    with pytest.raises(tops_core.InvalidInputError, match="same device"):
        tops_core.select(b_scores.cpu(), b_sim, 4)


@pytest.mark.skipif(not triton_kernels.available(), reason="needs triton (the gpu extra)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernel_equals_loop_and_core_on_the_gpu(dtype):
    """The compiled kernel (not the interpreter): batched crops, the loop's order, the core's certificate."""
    scores, sim = _continuous(3, n=200, batch=5)
    t_scores = torch.tensor(scores, dtype=dtype, device="cuda")
    t_sim = torch.tensor(sim, dtype=dtype, device="cuda")
    with torch_adapter.use_route("triton"):
        fused = tops_core.select(t_scores, t_sim, 40)
    with torch_adapter.use_route("loop"):
        loop = tops_core.select(t_scores, t_sim, 40)
    assert fused.method == "incremental" and loop.method == "greedy"
    torch.testing.assert_close(fused.order, loop.order, rtol=0, atol=0)
    for b in range(5):
        core = tops_core.select(t_scores[b].cpu().numpy(), t_sim[b].cpu().numpy(), 40)
        np.testing.assert_array_equal(fused.order[b].cpu().numpy(), core.order)
        np.testing.assert_allclose(fused.gains[b].cpu().numpy(), core.gains, rtol=1e-9)
        np.testing.assert_allclose(float(fused.upper_bound[b]), core.upper_bound, rtol=1e-9)


@pytest.mark.skipif(not triton_kernels.available(), reason="needs triton (the gpu extra)")
@pytest.mark.parametrize("rule", [TOPSRule(), TOPSRule(alpha=0.5, lam=1.0, norm="minmax")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_tops_rule_equals_loop_and_core_on_the_gpu(rule, dtype):
    """The compiled TOPS rule kernel: batched crops, the loop's order, the core's certificate."""
    scores, sim = _continuous(4, n=200, batch=5)
    t_scores = torch.tensor(scores, dtype=dtype, device="cuda")
    t_sim = torch.tensor(sim, dtype=dtype, device="cuda")
    with torch_adapter.use_route("triton"):
        fused = tops_core.select(t_scores, t_sim, 80, objective=rule)
    with torch_adapter.use_route("loop"):
        loop = tops_core.select(t_scores, t_sim, 80, objective=rule)
    assert fused.method == loop.method == "tops_rule"
    if dtype == torch.float64:  # the loop sums float32 input in float32; the kernel and the core in float64
        torch.testing.assert_close(fused.order, loop.order, rtol=0, atol=0)
    for b in range(5):
        core = tops_core.select(t_scores[b].cpu().numpy(), t_sim[b].cpu().numpy(), 80, objective=rule)
        np.testing.assert_array_equal(fused.order[b].cpu().numpy(), core.order)
        np.testing.assert_allclose(fused.gains[b].cpu().numpy(), core.gains, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(float(fused.upper_bound[b]), core.upper_bound, rtol=1e-9)
