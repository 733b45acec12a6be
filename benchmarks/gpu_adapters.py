"""PyTorch (and MLX) selection vs the NumPy core and vs straightforward peer loops, side by side.

One command (on a GPU machine it picks CUDA; elsewhere CPU)::

    python benchmarks/gpu_adapters.py                # -> benchmarks/results/adapters_<device>.{json,md}
    python benchmarks/gpu_adapters.py --device cpu --cases targets

``--cases targets`` (the default) times the issue's targets only: the NumPy
core, then the same call on torch tensors (CPU: the core on a zero-copy
view; CUDA: the fused Triton kernels, for the objective's ``auto``,
``greedy`` and ``lazy`` and for the TOPS rule, launches counted, next to the
plain PyTorch loop) and on MLX arrays (CPU runs, when MLX is installed),
every ratio against the core's row.
``--cases all`` adds the peer loops and the on-device reference loops below.

Cases are the issue's targets: certified greedy at N=2880, k=640; the TOPS rule
at N=2880, k=1280; 5 crops x N=576, k=128 batched; and the DPP rule at
N=2880, k=640. Peers, run in the same process on the same inputs:

* ``numpy core``: ``tops_core.select`` on NumPy arrays (host, lazy greedy).
* ``MMTok-style loop``: per step, the coverage of every candidate recomputed
  in full (``max(s, m)`` summed), the pick read back with ``int(argmax)``.
* ``CDPruner DPP loop``: CDPruner's fast greedy MAP over the explicit kernel
  ``diag(q) S diag(q)``.

Every contender's answer is compared with the native one ("same answer");
ratios are peer time / native time (above 1: native is faster). Timings are
medians; a GPU run synchronises before reading the clock.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "adapters")]

import tops_core  # noqa: E402
from tops_core import DPP, Objective, TOPSRule  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


# --------------------------------------------------------------------- data
def image_tokens(rng, n, dim=1024, clusters=48):
    """Clustered unit features (a stand-in for projected ViT tokens) and CLS-like relevance."""
    centres = rng.normal(size=(clusters, dim))
    feats = centres[rng.integers(0, clusters, n)] + 0.8 * rng.normal(size=(n, dim))
    sim = tops_core.cosine(feats).astype(np.float32)  # (1 + cos) / 2, symmetric, PSD
    scores = (rng.random(n) ** 4).astype(np.float32)
    return scores, sim


# -------------------------------------------------------------------- peers
def mmtok_style_greedy(scores, sim, k, focus):
    """Straightforward coverage greedy: every gain recomputed in full, one host read per step."""
    # Weights as the objective defines them (the native loop computes them the same way).
    n = scores.shape[0]
    w = (1 - focus) + focus * (scores / (scores.sum() / n)) if focus else torch.ones_like(scores)
    m = torch.zeros(n, dtype=sim.dtype, device=sim.device)
    chosen = torch.zeros(n, dtype=torch.bool, device=sim.device)
    order = []
    for _ in range(k):
        gains = ((torch.maximum(sim, m[None, :]) - m[None, :]) * w).sum(1)
        gains[chosen] = -float("inf")
        i = int(torch.argmax(gains))
        order.append(i)
        chosen[i] = True
        m = torch.maximum(m, sim[i])
    return torch.tensor(order)


def cdpruner_dpp(scores, sim, k):
    """CDPruner's greedy MAP loop (kernel built explicitly, incremental Cholesky rows)."""
    q = (scores - scores.min()) / (scores.max() - scores.min())
    kernel = q[:, None] * sim * q[None, :]
    n = scores.shape[0]
    cis = torch.zeros(k, n, dtype=sim.dtype, device=sim.device)
    di2s = torch.diagonal(kernel).clone()
    picks = []
    for i in range(k):
        j = torch.argmax(di2s)
        picks.append(j)
        eis = (kernel[j] - cis[:i, j] @ cis[:i]) / torch.sqrt(di2s[j])
        cis[i] = eis
        di2s -= eis**2
        di2s[j] = -float("inf")
    return torch.stack(picks)


# ------------------------------------------------------------------ timing
def timed(fn, device, repeats, budget_s=20.0):
    """Median wall time (ms) of ``fn()`` after one warm-up; fewer repeats for slow contenders."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return out, 1e3 * statistics.median(times), len(times)


def as_order(x):
    x = x.order if hasattr(x, "order") else x
    return np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x).reshape(-1)


class _CountOps(TorchDispatchMode):
    """Counts dispatched aten ops (each is at least one kernel launch on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def launches(fn):
    """``(aten ops, Triton launches)`` of one call of ``fn``."""
    from tops_adapters import triton_kernels

    before = triton_kernels.launch_count()
    with _CountOps() as counter:
        fn()
    return counter.ops, triton_kernels.launch_count() - before


def target_cases(rng, device, repeats):
    """The issue's targets: the core first, then torch tensors (and MLX arrays on the CPU)."""
    cases = []
    objective = Objective()
    mlx = None
    if device.type == "cpu":
        try:
            import mlx.core as mlx
        except ImportError:
            print("    (mlx not installed: no MLX rows)")

    def select(s, m, k, **kw):
        kw.setdefault("objective", objective)
        return lambda: tops_core.select(s, m, k, **kw)

    for n, k in ((576, 64), (2880, 640)):
        scores, sim = image_tokens(rng, n)
        t_scores, t_sim = torch.from_numpy(scores).to(device), torch.from_numpy(sim).to(device)
        contenders = [
            ("numpy core (auto)", select(scores, sim, k)),
            (f"torch {device.type} tensors (auto)", select(t_scores, t_sim, k)),
        ]
        if mlx is not None:
            contenders.append(("mlx arrays, mlx[cpu] (auto)", select(mlx.array(scores), mlx.array(sim), k)))
        if device.type == "cuda":
            contenders += [
                ("torch cuda, fused (greedy)", select(t_scores, t_sim, k, method="greedy")),
                ("torch cuda, fused (lazy)", select(t_scores, t_sim, k, method="lazy")),
                ("torch cuda, PyTorch loop (greedy)", on_loop(select(t_scores, t_sim, k, method="greedy"))),
            ]
        case = run_case(f"certified greedy, N={n}, k={k}", contenders, device, repeats)
        if device.type == "cuda" and n == 2880:
            ops, kernels = launches(select(t_scores, t_sim, k))
            case["launches"] = {"aten_ops_including_input_checks": ops, "triton_launches": kernels}
        cases.append(case)
    if device.type == "cuda":
        scores, sim = image_tokens(rng, 2880)
        t_scores, t_sim = torch.from_numpy(scores).to(device), torch.from_numpy(sim).to(device)
        rule = TOPSRule()
        case = run_case(
            "TOPSRule, N=2880, K=1280",
            [
                ("numpy core", select(scores, sim, 1280, objective=rule)),
                ("torch cuda, fused", select(t_scores, t_sim, 1280, objective=rule)),
                # The dense loop launches ~42 kernels a step: a few runs are enough.
                ("torch cuda, PyTorch loop", on_loop(select(t_scores, t_sim, 1280, objective=rule)), 3),
            ],
            device,
            repeats,
        )
        ops, kernels = launches(select(t_scores, t_sim, 1280, objective=rule))
        case["launches"] = {"aten_ops_including_input_checks": ops, "triton_launches": kernels}
        cases.append(case)
        crops = [image_tokens(rng, 576) for _ in range(5)]
        c_scores, c_sim = np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops])
        tc_scores, tc_sim = torch.from_numpy(c_scores).to(device), torch.from_numpy(c_sim).to(device)
        cases.append(
            run_case(
                "certified greedy, 5 crops x N=576, k=128, batched",
                [
                    ("numpy core (auto)", select(c_scores, c_sim, 128)),
                    ("torch cuda batched (auto)", select(tc_scores, tc_sim, 128)),
                ],
                device,
                repeats,
            )
        )
    return cases


def on_loop(fn):
    """``fn`` on the plain PyTorch loop (the reference the fused kernels are tested against)."""
    from tops_adapters.torch import use_route

    def run():
        with use_route("loop"):
            return fn()

    return run


def run_case(name, contenders, device, repeats):
    """Time ``(label, fn[, repeats])`` contenders; every order compared with the first row's."""
    print(f"- {name}", flush=True)
    rows, native_ms, native_order = [], None, None
    for label, fn, *own_repeats in contenders:
        out, ms, runs = timed(fn, device, min(repeats, *own_repeats) if own_repeats else repeats)
        order = as_order(out)
        if native_order is None:
            native_ms, native_order = ms, order
        same = bool(order.shape == native_order.shape and (order == native_order).all())
        differ = np.flatnonzero(order != native_order) if order.shape == native_order.shape else [0]
        rows.append(
            {
                "contender": label,
                "ms": round(ms, 3),
                "runs": runs,
                "ratio_vs_native": round(ms / native_ms, 2),
                "same_answer": same,
                "same_set": bool(np.array_equal(np.sort(order), np.sort(native_order))),
                "first_difference": None if same else int(differ[0]),
            }
        )
        print(f"    {label:32s} {ms:10.2f} ms  x{ms / native_ms:7.2f}  same={same}", flush=True)
    return {"case": name, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per contender")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cases",
        choices=["targets", "all"],
        default="targets",
        help="the issue's targets only (default), or also the peer and reference loops",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (fewer spin less on a shared machine)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (20 if device.type == "cuda" else 3)
    rng = np.random.default_rng(args.seed)

    def dev(x):
        return torch.from_numpy(x).to(device)

    cases = target_cases(rng, device, repeats)
    if args.cases == "all":
        cases += peer_cases(rng, device, repeats, dev)
    write_report(cases, device, repeats, argv)


def peer_cases(rng, device, repeats, dev):
    """Peers and the on-device reference loops (slow on a CPU: minutes)."""
    from tops_adapters.torch import use_route

    cases = []
    objective = Objective()  # the default certified objective (focus 0.5)

    def loop(fn):
        def run():
            with use_route("loop"):
                return fn()

        return run

    scores, sim = image_tokens(rng, 2880)
    t_scores, t_sim = dev(scores), dev(sim)
    cases.append(
        run_case(
            "certified greedy, N=2880, k=640, batch 1",
            [
                ("native (auto)", lambda: tops_core.select(t_scores, t_sim, 640, objective=objective)),
                (
                    "PyTorch loop (greedy)",
                    loop(
                        lambda: tops_core.select(t_scores, t_sim, 640, objective=objective, method="greedy")
                    ),
                ),
                ("numpy core (auto = lazy)", lambda: tops_core.select(scores, sim, 640, objective=objective)),
                ("MMTok-style loop", lambda: mmtok_style_greedy(t_scores, t_sim, 640, objective.focus)),
            ],
            device,
            repeats,
        )
    )

    cases.append(
        run_case(
            "TOPSRule, N=2880, k=1280",
            [
                ("native", loop(lambda: tops_core.select(t_scores, t_sim, 1280, objective=TOPSRule()))),
                ("numpy core", lambda: tops_core.select(scores, sim, 1280, objective=TOPSRule())),
            ],
            device,
            repeats,
        )
    )

    cases.append(
        run_case(
            "DPP rule, N=2880, k=640",
            [
                ("native", loop(lambda: tops_core.select(t_scores, t_sim, 640, objective=DPP()))),
                ("numpy core", lambda: tops_core.select(scores, sim, 640, objective=DPP())),
                ("CDPruner DPP loop", lambda: cdpruner_dpp(t_scores, t_sim, 640)),
            ],
            device,
            repeats,
        )
    )

    crops = [image_tokens(rng, 576) for _ in range(5)]
    c_scores = np.stack([c[0] for c in crops])
    c_sim = np.stack([c[1] for c in crops])
    tc_scores, tc_sim = dev(c_scores), dev(c_sim)
    cases.append(
        run_case(
            "certified greedy, 5 crops x N=576, k=128 each, batched",
            [
                (
                    "native batched (auto)",
                    lambda: tops_core.select(tc_scores, tc_sim, 128, objective=objective),
                ),
                (
                    "native, crop by crop",
                    lambda: torch.stack(
                        [
                            tops_core.select(tc_scores[b], tc_sim[b], 128, objective=objective).order
                            for b in range(5)
                        ]
                    ),
                ),
                (
                    "numpy core (auto = lazy)",
                    lambda: tops_core.select(c_scores, c_sim, 128, objective=objective),
                ),
                (
                    "MMTok-style loop, crop by crop",
                    lambda: torch.stack(
                        [mmtok_style_greedy(tc_scores[b], tc_sim[b], 128, objective.focus) for b in range(5)]
                    ),
                ),
            ],
            device,
            repeats,
        )
    )
    return cases


def write_report(cases, device, repeats, argv):
    name = device.type
    report = {
        "benchmark": "adapters",
        "command": " ".join(
            ["python benchmarks/gpu_adapters.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "device": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}), "
            f"{torch.get_num_threads()} torch threads"
        ),
        "torch": torch.__version__,
        "dtype": "float32",
        "repeats": repeats,
        "cases": cases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"adapters_{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"adapters_{name}.md").write_text(markdown(report))
    print(f"wrote {RESULTS / f'adapters_{name}.json'} and .md")


def markdown(report):
    """The Markdown table, generated from the JSON report."""
    lines = [
        f"Device: {report['device']}; torch {report['torch']}; inputs {report['dtype']}; "
        f"median of up to {report['repeats']} runs after a warm-up. "
        f"Command: `{report['command']}`.",
        "",
        "| case | contender | time (ms) | time / first row | same order as first row |",
        "|---|---|---:|---:|:---:|",
    ]
    for case in report["cases"]:
        for i, row in enumerate(case["rows"]):
            same = (
                "yes"
                if row["same_answer"]
                else (
                    f"no: {'same set, ' if row['same_set'] else ''}"
                    f"first difference at pick {row['first_difference']}"
                )
            )
            lines.append(
                f"| {case['case'] if i == 0 else ''} | {row['contender']} | {row['ms']:.2f} | "
                f"{row['ratio_vs_native']:.2f} | {same} |"
            )
        if "launches" in case:
            counts = case["launches"]
            lines.append(
                f"| | launches of one call | {counts['aten_ops_including_input_checks']} aten ops + "
                f"{counts['triton_launches']} Triton | | |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
