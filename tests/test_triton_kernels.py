"""The fused Triton kernel against the plain PyTorch loop and the core.

Without a GPU the kernels run on CPU tensors through Triton's interpreter
(``TRITON_INTERPRET=1``, set in ``conftest.py`` before Triton is first imported,
which is when Triton reads it), so these tests run in every ``pytest`` run where
Triton is installed (the ``gpu`` extra). Sizes stay small: the interpreter
executes every step in Python.
"""

import os
import subprocess
import sys
import textwrap
import typing

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")  # TRITON_INTERPRET=1 without a GPU: set in conftest.py

from tops_adapters import _native_solvers  # noqa: E402
from tops_adapters import torch as torch_adapter  # noqa: E402
from tops_adapters import triton_kernels as tk  # noqa: E402
from tops_adapters.torch import TorchOps  # noqa: E402

import tops_core  # noqa: E402
from tops_core import Objective, TOPSRule  # noqa: E402

ON_CPU = not torch.cuda.is_available()
DEVICE = "cpu" if ON_CPU else "cuda"


def _dyadic(seed, n, batch=1, zero_tokens=()):
    """Symmetric similarities and scores on the 1/8 grid (sums exact in float32 and float64)."""
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 9, (batch, n, n)) / 8
    sim = np.triu(sim) + np.swapaxes(np.triu(sim, 1), -1, -2)
    for t in zero_tokens:  # a token similar to nothing, itself included
        sim[:, t, :] = 0
        sim[:, :, t] = 0
    return rng.integers(0, 9, (batch, n)) / 8, sim


def _kernel(objective, scores, sim, k, dtype=torch.float64, blocks=None):
    r = torch.tensor(scores, dtype=dtype, device=DEVICE)
    s = torch.tensor(sim, dtype=dtype, device=DEVICE)
    return tk.incremental_greedy(objective, r, s, k, blocks)


def _loop(objective, scores, sim, k, dtype=torch.float64):
    r = torch.tensor(scores, dtype=dtype, device=DEVICE)
    s = torch.tensor(sim, dtype=dtype, device=DEVICE)
    return _native_solvers.objective_greedy(TorchOps(r.device), objective, r, s, k, lazy=False)


def _check_against_reference(objective, scores, sim, k, dtype=torch.float64, blocks=None):
    """Order, gains and value equal the loop's; the certificate equals the core's ``auto`` one."""
    fused = _kernel(objective, scores, sim, k, dtype, blocks)
    loop = _loop(objective, scores, sim, k, dtype)
    np.testing.assert_array_equal(fused.order.cpu().numpy(), loop.order.cpu().numpy())
    np.testing.assert_array_equal(fused.gains.cpu().numpy(), loop.gains.cpu().numpy().astype(np.float64))
    np.testing.assert_array_equal(fused.value.cpu().numpy(), loop.value.cpu().numpy())
    for b in range(scores.shape[0]):
        core = tops_core.select(scores[b], sim[b], k, objective=objective)  # "auto": the core's Incremental
        np.testing.assert_array_equal(fused.order[b].cpu().numpy(), core.order)
        np.testing.assert_array_equal(fused.gains[b].cpu().numpy(), core.gains)
        assert float(fused.value[b]) == core.value
        assert float(fused.bound[b]) == core.upper_bound  # the same gain layer: the same bits
        # Greedy's bound (the loop's) is a minimum over more steps: never above the incremental one.
        assert float(loop.bound[b]) <= float(fused.bound[b]) + 1e-12
    return fused


OBJECTIVES = [
    Objective(focus=0.0),
    Objective(relevance=0.5, redundancy=0.25, focus=0.0),
    Objective(relevance=1.0, coverage=0.0, focus=0.0),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=["coverage", "all-terms", "relevance-only"])
def test_random_dyadic_equals_reference(objective):
    scores, sim = _dyadic(0, 13)
    _check_against_reference(objective, scores, sim, 6)


def test_batched_rows_in_one_launch_with_multi_block_tiles():
    # N = 21 with 8-wide tiles and 2-row update groups: every loop runs several blocks.
    scores, sim = _dyadic(1, 21, batch=3, zero_tokens=(4,))
    before = tk.launch_count()
    fused = _check_against_reference(Objective(focus=0.0), scores, sim, 9, blocks=tk.Blocks(8, 2, 8))
    assert tk.launch_count() - before == 2  # initial gains + all steps of all rows
    assert fused.order.shape == (3, 9)


@pytest.mark.parametrize("k", [0, 1, 10])
def test_budgets_none_one_and_all(k):
    scores, sim = _dyadic(2, 10, batch=2)
    _check_against_reference(Objective(relevance=0.25, redundancy=0.125, focus=0.0), scores, sim, k)


def test_ties_go_to_the_lowest_index():
    n = 9
    scores, sim = np.ones((1, n)), np.full((1, n, n), 0.5)
    fused = _check_against_reference(Objective(focus=0.0), scores, sim, n)
    assert fused.order[0].tolist() == list(range(n))
    # Two identical clusters: the first member of each wins its ties.
    block = np.kron(np.eye(2), np.ones((3, 3)))[None] * 0.75
    _check_against_reference(Objective(focus=0.0), np.ones((1, 6)), block, 4)


def test_zero_rows_and_an_all_zero_matrix():
    scores, sim = _dyadic(3, 11, zero_tokens=(0, 5, 10))
    _check_against_reference(Objective(focus=0.0), scores, sim, 11)
    fused = _check_against_reference(Objective(focus=0.0), scores, np.zeros((1, 11, 11)), 4)
    assert fused.order[0].tolist() == [0, 1, 2, 3] and float(fused.value[0]) == 0.0


def test_float32_similarities_and_focus_weights():
    scores, sim = _dyadic(4, 12)
    _check_against_reference(Objective(focus=0.0), scores, sim, 5, dtype=torch.float32)
    # focus > 0: weights r_j / mean(r) are not dyadic; the core's order still holds on clear gaps.
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(12, 16))
    sim = tops_core.cosine(feats)[None]
    scores = rng.random((1, 12))
    fused = _kernel(Objective(), scores, sim, 5)
    core = tops_core.select(scores[0], sim[0], 5)
    np.testing.assert_array_equal(fused.order[0].cpu().numpy(), core.order)
    np.testing.assert_allclose(fused.gains[0].cpu().numpy(), core.gains, rtol=1e-12)
    np.testing.assert_allclose(float(fused.bound[0]), core.upper_bound, rtol=1e-12)


def test_select_with_the_triton_route_equals_the_core():
    scores, sim = _dyadic(5, 10)
    with torch_adapter.use_route("triton"):
        sel = tops_core.select(
            torch.tensor(scores[0], device=DEVICE),
            torch.tensor(sim[0], device=DEVICE),
            4,
            objective=Objective(focus=0.0),
        )
    core = tops_core.select(scores[0], sim[0], 4, objective=Objective(focus=0.0))
    assert sel.method == core.method == "incremental"
    assert sel.order.device.type == DEVICE and sel.value.dtype == torch.float64
    np.testing.assert_array_equal(sel.order.cpu().numpy(), core.order)
    assert float(sel.value) == core.value and bool(sel.optimal) == core.optimal


def test_whole_selection_is_few_launches_and_aten_ops(monkeypatch):
    """N=2880, k=640: kernel launches plus dispatched aten ops, counted without running the kernels."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = 0
        names: typing.ClassVar[set] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            Count.names.add(str(func))
            return func(*args, **(kwargs or {}))

    launched = []
    monkeypatch.setattr(tk, "_launch", lambda kernel, grid, *args, **meta: launched.append(grid))
    n, k = 2880, 640
    r = torch.rand(1, n)
    s = torch.rand(1, n, n)
    with Count():
        result = tk.incremental_greedy(Objective(), r, s, k)
    assert result.order.shape == (1, k)
    assert len(launched) == 2
    assert "aten._local_scalar_dense.default" not in Count.names  # no .item(): nothing waits for the GPU
    total = Count.ops + len(launched)
    assert total <= 64, f"{Count.ops} aten ops + {len(launched)} launches"


@pytest.mark.slow
def test_kernels_compile_for_an_h100():
    """Every kernel (each certificate, forced picks, both norms) lowers to sm_90 code without a GPU."""
    script = textwrap.dedent("""
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from tops_adapters import _triton_kernels as kern

        target = GPUTarget("cuda", 90, 32)
        flags = {"FOCUS": True, "HAS_COV": True}
        for s_type in ("*fp32", "*fp64"):
            sig = {"s_ptr": s_type, "r_ptr": s_type, "cov_ptr": "*fp64", "g0_ptr": "*fp64", "n": "i32",
                   "a": "fp64", "bw": "fp64", "focus": "fp64"}
            meta = flags | {"BLOCK_J": 16, "BLOCK_I": 256}
            sig |= dict.fromkeys(meta, "constexpr")
            assert "cubin" in triton.compile(ASTSource(kern.initial_gains, sig, meta), target=target).asm
            names = ["s_ptr", "r_ptr", "cov_ptr", "gfin_ptr", "m_ptr", "pen_ptr", "old_ptr", "chosen_ptr",
                     "changed_ptr", "order_ptr", "f_ptr", "g_ptr", "out_ptr", "near_ptr", "stash_ptr",
                     "up_ptr", "stale_f_ptr", "stale_g_ptr", "forced_ptr", "n", "k", "a", "bw", "c", "focus"]
            types = [s_type, s_type] + ["*fp64"] * 5 + ["*i32", "*i32", "*i64"] + ["*fp64"] * 3 + [
                "*i32"] + ["*fp64"] * 4 + ["*i64", "i32", "i32", "fp64", "fp64", "fp64", "fp64"]
            # Every certificate and forced picks, float32 only (float64: the default variant).
            variants = ((0, False), (1, False), (2, False), (1, True)) if s_type == "*fp32" else ((0, False),)
            for cert, forced in variants:
                meta = flags | {"HAS_PEN": True, "CERT": cert, "FORCED": forced, "BLOCK": 1024, "ROWS": 16,
                                "BLOCK_I": 256}
                sig = dict(zip(names, types)) | dict.fromkeys(meta, "constexpr")
                compiled = triton.compile(ASTSource(kern.greedy_steps, sig, meta), target=target,
                                          options={"enable_fp_fusion": False})
                assert "cubin" in compiled.asm
            if s_type == "*fp64":
                continue
            sig = {"cols_ptr": s_type, "r_ptr": s_type, "c_ptr": "*fp64", "n": "i32"}
            meta = {"BLOCK_J": 16, "BLOCK_I": 256}
            sig |= dict.fromkeys(meta, "constexpr")
            assert "cubin" in triton.compile(ASTSource(kern.tops_rule_coverage, sig, meta), target=target).asm
            names = ["cols_ptr", "r_ptr", "c_ptr", "m_ptr", "old_ptr", "chosen_ptr", "changed_ptr",
                     "order_ptr", "near_ptr", "n", "k", "alpha", "lam"]
            types = [s_type, s_type, "*fp64", "*fp64", "*fp64", "*i32", "*i32", "*i64", "*i32", "i32", "i32",
                     "fp64", "fp64"]
            for minmax in (False, True):
                meta = {"MINMAX": minmax, "HAS_D": True, "HAS_C": True, "BLOCK": 1024, "ROWS": 16,
                        "BLOCK_I": 256}
                sig = dict(zip(names, types)) | dict.fromkeys(meta, "constexpr")
                compiled = triton.compile(ASTSource(kern.tops_rule_steps, sig, meta), target=target,
                                          options={"enable_fp_fusion": False})
                assert "cubin" in compiled.asm
        print("compiled")
    """)
    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("method", ["greedy", "lazy"])
def test_greedy_and_lazy_run_the_kernel_with_their_own_certificate(method):
    """Same picks as ``auto``; the bound is the core's greedy (every step) or lazy (stale heap) one."""
    objective = Objective(relevance=0.5, redundancy=0.25, focus=0.0)
    scores, sim = _dyadic(6, 11, batch=2)
    before = tk.launch_count()
    with torch_adapter.use_route("triton"):
        sel = tops_core.select(
            torch.tensor(scores, device=DEVICE),
            torch.tensor(sim, device=DEVICE),
            5,
            objective=objective,
            method=method,
        )
    launched = tk.launch_count() - before
    core = tops_core.select(scores, sim, 5, objective=objective, method=method)
    assert sel.method == core.method == method
    np.testing.assert_array_equal(sel.order.cpu().numpy(), core.order)
    np.testing.assert_array_equal(sel.gains.cpu().numpy(), core.gains)
    np.testing.assert_array_equal(sel.value.cpu().numpy(), core.value)
    np.testing.assert_allclose(sel.upper_bound.cpu().numpy(), core.upper_bound, rtol=1e-12)
    # The raw kernel (no near-tie re-run) gives the same answer and bound on these exact inputs.
    r, s = torch.tensor(scores, device=DEVICE), torch.tensor(sim, device=DEVICE)
    raw = tk.incremental_greedy(objective, r, s, 5, certificate=method)
    # One launch pair, and one more (the certificate along the core's order) per row flagged near a tie.
    assert launched == 2 + 2 * int(raw.near_tie.sum())
    np.testing.assert_array_equal(raw.order.cpu().numpy(), core.order)
    np.testing.assert_array_equal(raw.gains.cpu().numpy(), core.gains)
    np.testing.assert_allclose(raw.bound.cpu().numpy(), core.upper_bound, rtol=1e-12)
    # Coverage only, on the 1/8 grid: stale keys tie the pick's, where the heap's (f, -i) order decides.
    scores9, sim9 = _dyadic(6, 9)
    raw9 = tk.incremental_greedy(
        Objective(focus=0.0),
        torch.tensor(scores9, device=DEVICE),
        torch.tensor(sim9, device=DEVICE),
        5,
        certificate=method,
    )
    core9 = tops_core.select(scores9[0], sim9[0], 5, objective=Objective(focus=0.0), method=method)
    np.testing.assert_allclose(float(raw9.bound[0]), core9.upper_bound, rtol=1e-12)
    # No budget: the bound is 0 (nothing stashed is read).
    with torch_adapter.use_route("triton"):
        none = tops_core.select(r, s, 0, objective=objective, method=method)
    assert none.upper_bound.tolist() == [0.0, 0.0] and none.order.shape == (2, 0)
    # Greedy's bound is a minimum over every step, lazy's over stale gains: they differ here.
    other = "lazy" if method == "greedy" else "greedy"
    assert not np.allclose(
        core.upper_bound,
        tops_core.select(scores, sim, 5, objective=objective, method=other).upper_bound,
        rtol=1e-9,
    )
    assert (raw.bound.cpu().numpy() >= core.upper_bound).all()  # padded by the drift bound: never below


def _near_tie_pair(seed, n=12):
    """Tokens 0 and 1 whose coverage gains are equal in exact arithmetic, not in float64.

    Their columns hold the same tenths (not exactly representable) in different
    orders, so every summation order rounds them its own way.
    """
    rng = np.random.default_rng(seed)
    vals = rng.integers(1, 10, n) / 10
    perm = rng.permutation(vals)
    sim = np.zeros((n, n))
    sim[:, 0] = sim[0, :] = vals
    sim[:, 1] = sim[1, :] = perm
    sim[0, 1] = sim[1, 0] = vals[1]
    sim[1, 1] = perm[1]
    return np.ones(n), sim


@pytest.mark.parametrize("method", ["auto", "greedy", "lazy"])
def test_near_ties_are_flagged_and_rerun_exactly(monkeypatch, method):
    objective = Objective(relevance=0.0, focus=0.0)
    tied, clear = _near_tie_pair(23), _near_tie_pair(0)
    scores = np.stack([tied[0], clear[0]])
    sim = np.stack([tied[1], clear[1]])
    r, s = torch.tensor(scores, device=DEVICE), torch.tensor(sim, device=DEVICE)
    raw = tk.incremental_greedy(objective, r, s, 2)
    assert raw.near_tie.tolist() == [1, 0]
    core = [tops_core.select(scores[b], sim[b], 2, objective=objective, method=method) for b in range(2)]
    if ON_CPU:  # the interpreter's summation order: this input does mislead the running gains
        assert raw.order[0].tolist() != core[0].order.tolist()
    calls = []
    exact = tops_core.api._select_numpy
    monkeypatch.setattr(
        tops_core.api, "_select_numpy", lambda *a, **kw: calls.append(a[4]) or exact(*a, **kw)
    )  # a[4]: the solver
    with torch_adapter.use_route("triton"):
        sel = tops_core.select(r, s, 2, objective=objective, method=method)
    # Only the flagged row went to the core, and to its fast Incremental (greedy's answer) whatever
    # the method; the method's own certificate comes from the kernel along the core's order.
    assert [type(x).__name__ for x in calls] == ["Incremental"]
    assert sel.method == core[0].method
    for b in range(2):
        np.testing.assert_array_equal(sel.order[b].cpu().numpy(), core[b].order)
        np.testing.assert_allclose(float(sel.upper_bound[b]), core[b].upper_bound, rtol=1e-12)
    # The re-run row is the core's bit for bit; the other keeps the kernel's running gains.
    np.testing.assert_array_equal(sel.gains[0].cpu().numpy(), core[0].gains)
    assert float(sel.value[0]) == core[0].value
    np.testing.assert_allclose(sel.gains[1].cpu().numpy(), core[1].gains, rtol=1e-14)


# ------------------------------------------------------------------ TOPS rule
RULES = [TOPSRule(), TOPSRule(norm="minmax"), TOPSRule(alpha=0.0, lam=1.0), TOPSRule(lam=0.0, norm="minmax")]


def _rule_order(rule, scores, sim, k, dtype=torch.float64, blocks=None):
    r = torch.tensor(scores, dtype=dtype, device=DEVICE)
    s = torch.tensor(sim, dtype=dtype, device=DEVICE)
    return tk.tops_rule_order(rule, r, s, k, blocks)


def _check_rule(rule, scores, sim, k, dtype=torch.float64, blocks=None):
    """The raw kernel's order (no re-run) equals the loop's and the core's, row by row."""
    fused = _rule_order(rule, scores, sim, k, dtype, blocks)
    r = torch.tensor(scores, dtype=dtype, device=DEVICE)
    s = torch.tensor(sim, dtype=dtype, device=DEVICE)
    loop = _native_solvers.rule_order(TorchOps(r.device), rule, r, s, k)
    np.testing.assert_array_equal(fused.order.cpu().numpy(), loop.cpu().numpy())
    for b in range(scores.shape[0]):
        np.testing.assert_array_equal(fused.order[b].cpu().numpy(), rule.order(scores[b], sim[b], k))
    return fused


@pytest.mark.parametrize("rule", RULES, ids=["mean", "minmax", "coverage-only", "novelty-only"])
def test_tops_rule_kernel_equals_loop_and_core(rule):
    scores, sim = _dyadic(7, 11, batch=2, zero_tokens=(3,))
    _check_rule(rule, scores, sim, 7)


def test_tops_rule_batched_multi_block_tiles_in_two_launches():
    scores, sim = _dyadic(8, 19, batch=2, zero_tokens=(0,))
    before = tk.launch_count()
    _check_rule(TOPSRule(), scores, sim, 8, dtype=torch.float32, blocks=tk.Blocks(8, 2, 8))
    assert tk.launch_count() - before == 2  # coverage after the seed + all steps of all rows


@pytest.mark.parametrize("k", [0, 1, 8])
@pytest.mark.parametrize("norm", ["mean", "minmax"])
def test_tops_rule_select_budgets_none_one_and_all(k, norm):
    rule = TOPSRule(norm=norm)
    scores, sim = _dyadic(9, 8)
    with torch_adapter.use_route("triton"):
        sel = tops_core.select(
            torch.tensor(scores[0], device=DEVICE), torch.tensor(sim[0], device=DEVICE), k, objective=rule
        )
    core = tops_core.select(scores[0], sim[0], k, objective=rule)
    assert sel.method == core.method == "tops_rule"
    np.testing.assert_array_equal(sel.order.cpu().numpy(), core.order)
    np.testing.assert_allclose(sel.gains.cpu().numpy(), core.gains, rtol=1e-12, atol=1e-12)  # running gains
    np.testing.assert_allclose(float(sel.value), core.value, rtol=1e-12)
    np.testing.assert_allclose(float(sel.upper_bound), core.upper_bound, rtol=1e-12)


def test_tops_rule_ties_and_zero_similarities():
    n = 7
    # Everything equal: the seed is token 0 and every later step a tie, won by the lowest index.
    fused = _check_rule(TOPSRule(), np.ones((1, n)), np.full((1, n, n), 0.5), n)
    assert fused.order[0].tolist() == list(range(n))
    _check_rule(TOPSRule(norm="minmax"), np.ones((1, n)), np.zeros((1, n, n)), 5)
    scores, sim = _dyadic(10, 9, zero_tokens=(0, 4, 8))
    _check_rule(TOPSRule(), scores, sim, 9)


def test_tops_rule_near_ties_are_flagged_and_rerun_exactly():
    rule = TOPSRule(alpha=0.0, lam=1.0)
    # Tokens 0 and 1 have equal coverage in exact arithmetic (tenths in different orders); the seed,
    # token 9, is similar to nothing, so step 1 decides between them on rounding alone.
    rows = []
    for seed in (17, 0):
        scores, sim = _near_tie_pair(seed, n=10)
        sim[9, :] = sim[:, 9] = 0.0
        scores = np.zeros(10)
        scores[9] = 1.0
        rows.append((scores, sim))
    scores, sim = np.stack([x[0] for x in rows]), np.stack([x[1] for x in rows])
    raw = _rule_order(rule, scores, sim, 3)
    assert raw.near_tie.tolist() == [1, 0]
    core = [rule.order(scores[b], sim[b], 3) for b in range(2)]
    if ON_CPU:  # the interpreter's summation order: this input does mislead the running coverage
        assert raw.order[0].tolist() != core[0].tolist()
    with torch_adapter.use_route("triton"):
        sel = tops_core.select(
            torch.tensor(scores, device=DEVICE), torch.tensor(sim, device=DEVICE), 3, objective=rule
        )
    for b in range(2):
        np.testing.assert_array_equal(sel.order[b].cpu().numpy(), core[b])


def test_tops_rule_whole_selection_is_few_launches_and_aten_ops(monkeypatch):
    """N=2880, K=1280: the rule's kernels, then its certificate's, counted without running them."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = 0
        names: typing.ClassVar[set] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            Count.names.add(str(func))
            return func(*args, **(kwargs or {}))

    launched = []
    monkeypatch.setattr(tk, "_launch", lambda kernel, grid, *args, **meta: launched.append(grid))
    n, k = 2880, 1280
    r = torch.rand(1, n)
    s = torch.rand(1, n, n)
    with Count():
        result = tk.tops_rule_order(TOPSRule(), r, s, k)
        # The certificate: the reference objective's fused pass along the rule's order.
        certified = tk.incremental_greedy(Objective(), r, s, k, forced=result.order)
    assert certified.order.shape == (1, k)
    assert len(launched) == 4
    assert "aten._local_scalar_dense.default" not in Count.names  # no .item(): nothing waits for the GPU
    total = Count.ops + len(launched)
    assert total <= 64, f"{Count.ops} aten ops + {len(launched)} launches"
