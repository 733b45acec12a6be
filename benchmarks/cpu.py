"""CPU speed of exact greedy selection: tops-prune against apricot-select and submodlib-py.

One command runs every case and writes ``benchmarks/results/cpu.json``, the
Markdown table ``benchmarks/results/cpu.md`` (generated from the JSON) and the
log-log plot ``docs/assets/bench/cpu_scaling.png`` (with ``--out DIR``: all three in ``DIR``)::

    python benchmarks/cpu.py            # every case (about 8 min on 2 cores)
    python benchmarks/cpu.py --quick    # small sizes, fewer repeats (about 1 min)

Every timing is the minimum over repeats (the machine may be shared). Peers
solve the same problem: plain facility location ``sum_j max_{i in S} s[j, i]``
(``Objective(focus=0)``) on the same float32 similarity, and every selected
set is checked against tops-prune's. Peers are benchmark-only dependencies
(``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tops_core  # noqa: E402
from tops_core._threads import thread_count  # noqa: E402
from tops_core.solvers import Greedy, Lazy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PLOT = ROOT / "docs" / "assets" / "bench" / "cpu_scaling.png"
SIZES = (256, 576, 1152, 2880, 5760, 11520)
PLAIN = tops_core.Objective(focus=0.0)  # facility location, what the peers compute


# --------------------------------------------------------------------- inputs
def token_features(n: int, d: int = 1024, seed: int = 0) -> np.ndarray:
    """ViT-like tokens: clusters of near-duplicates (background, objects) plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(4, n // 16), d))
    x = centres[rng.integers(0, centres.shape[0], n)] + 0.8 * rng.normal(size=(n, d))
    return x.astype(np.float32)


def problem(n: int, seed: int = 0):
    x = token_features(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    return rng.random(n).astype(np.float32), tops_core.cosine(x)


def budget(n: int) -> int:
    """k = 2N/9: LLaVA-NeXT keeps 640 of 2880 tokens."""
    return round(2 * n / 9)


def value_gap(r, sim, order, ours: float) -> float:
    """Relative gap ``(f(ours) - f(theirs)) / f(ours)`` of a peer's set (0: same value)."""
    theirs = PLAIN.value_of(r, sim, np.asarray(order, dtype=np.int64))
    return (ours - theirs) / max(abs(ours), 1e-300)


# -------------------------------------------------------------------- timing
def best_of(fn, repeats: int, budget_s: float):
    """(min seconds, last result) over up to ``repeats`` runs, stopping after ``budget_s``."""
    times, out, spent = [], None, 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent > budget_s:
            break
    return min(times), out


# --------------------------------------------------------------------- peers
def apricot_runner(compiled: bool):
    """apricot's FacilityLocationSelection; ``compiled`` memoises its Numba kernels.

    Stock apricot 0.6.1 builds its gain kernel with ``njit(signature)`` inside
    every ``fit``, so each call recompiles it (about 1 s). The memoised variant
    compiles once and measures the algorithm alone.
    """
    import apricot.functions.facilityLocation as fl

    for name in ("calculate_gains", "calculate_gains_sparse", "calculate_gains_sieve"):
        stock = getattr(fl, "_tops_stock_" + name, getattr(fl, name))
        setattr(fl, "_tops_stock_" + name, stock)
        setattr(fl, name, _memoised(stock) if compiled else stock)

    def run(sim64: np.ndarray, k: int, optimizer: str) -> np.ndarray:
        sel = fl.FacilityLocationSelection(k, metric="precomputed", optimizer=optimizer, verbose=False)
        return np.asarray(sel.fit(sim64).ranking, dtype=np.int64)

    return run


def _memoised(factory):
    """A kernel factory that compiles once per argument tuple (apricot builds kernels per fit)."""
    cache = {}

    def memo(*args):
        if args not in cache:
            cache[args] = factory(*args)
        return cache[args]

    return memo


def submodlib_run(sim: np.ndarray, k: int):
    """submodlib's dense FacilityLocationFunction + LazyGreedy: (construct s, maximise s, order)."""
    from submodlib import FacilityLocationFunction

    t0 = time.perf_counter()
    fn = FacilityLocationFunction(n=sim.shape[0], mode="dense", sijs=sim, separate_rep=False)
    t1 = time.perf_counter()
    res = fn.maximize(
        budget=k,
        optimizer="LazyGreedy",
        stopIfZeroGain=False,
        stopIfNegativeGain=False,
        verbose=False,
        show_progress=False,
    )
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, np.array([i for i, _ in res], dtype=np.int64)


def peer_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("apricot-select", "submodlib-py", "numba", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------- cases
def sweep(sizes, repeats, peer_budget_s, with_peers) -> list[dict]:
    """Time against N for every method; check every set against tops-prune's."""
    slow = set()  # methods that went over budget: skipped at larger N
    apricot = apricot_runner(compiled=True) if with_peers else None
    rows = []
    for n in sizes:
        row = sweep_one(n, repeats, peer_budget_s, apricot, slow)
        rows.append(row)
        print(
            f"N={n:6d} k={row['k']:5d} "
            + "  ".join(f"{m}: {v * 1e3:.1f} ms" for m, v in row["times_s"].items()),
            flush=True,
        )
    return rows


def sweep_one(n, repeats, peer_budget_s, apricot, slow) -> dict:
    """One size of the sweep (``apricot`` None: no peers)."""
    k = budget(n)
    r, sim = problem(n)
    row = {"n": n, "k": k, "times_s": {}, "same_set": {}}
    t, ours = best_of(lambda: tops_core.select(r, sim, k, objective=PLAIN), repeats, 5.0)
    row["times_s"]["tops auto"] = t
    row["value"] = ours.value
    want = set(ours.order.tolist())
    t, _ = best_of(lambda: tops_core.select(r, sim, k), repeats, 5.0)
    row["times_s"]["tops auto (focus=0.5)"] = t

    def check(name, fn, reps, order_of=lambda x: x):
        if name in slow:
            return
        t, out = best_of(fn, reps, peer_budget_s)
        row["times_s"][name] = t
        row["same_set"][name] = set(order_of(out).tolist()) == want
        row.setdefault("value_gap", {})[name] = value_gap(r, sim, order_of(out), ours.value)
        if t > peer_budget_s:
            slow.add(name)

    check("numpy lazy (reference)", lambda: Lazy().run(PLAIN, r, sim, k), 1, lambda x: x.order)
    check("numpy greedy (reference)", lambda: Greedy().run(PLAIN, r, sim, k), 1, lambda x: x.order)
    if apricot is None:
        return row
    sim64 = sim.astype(np.float64)
    check("apricot naive", lambda: apricot(sim64, k, "naive"), repeats)
    check("apricot lazy", lambda: apricot(sim64, k, "lazy"), repeats)
    check("apricot two-stage", lambda: apricot(sim64, k, "two-stage"), repeats)
    sim64 = None  # free the float64 copy before submodlib builds its own
    if "submodlib lazy" not in slow:
        best = None
        for _ in range(max(1, min(repeats, 3))):
            build, run, order = submodlib_run(sim, k)
            if best is None or build + run < best[0] + best[1]:
                best = (build, run)
            if build + run > peer_budget_s:
                break
        row["times_s"]["submodlib lazy"] = best[1]
        row["times_s"]["submodlib lazy (incl. build)"] = best[0] + best[1]
        row["same_set"]["submodlib lazy"] = set(order.tolist()) == want
        row.setdefault("value_gap", {})["submodlib lazy"] = value_gap(r, sim, order, ours.value)
        if sum(best) > peer_budget_s:
            slow.add("submodlib lazy")
    return row


@contextmanager
def threads(count: int | None):
    """Run the block with ``TOPS_NUM_THREADS=count`` (``None``: the library's default)."""
    before = os.environ.pop("TOPS_NUM_THREADS", None)
    if count is not None:
        os.environ["TOPS_NUM_THREADS"] = str(count)
    try:
        yield
    finally:
        os.environ.pop("TOPS_NUM_THREADS", None)
        if before is not None:
            os.environ["TOPS_NUM_THREADS"] = before


def where_time_goes(r, sim, k) -> dict:
    """The floor (one read of sim) and the parts of one ``select`` call, each timed alone.

    The reads that split across threads are timed on one thread and on the
    library's default (``tops_core._threads``), side by side.
    """
    from tops_core._numba import coverage_all
    from tops_core._validate import _extremes, exactly_symmetric, symmetry_memo
    from tops_core.solvers import Incremental

    w = PLAIN.row_weights(r.astype(np.float64))
    solver = Incremental()

    def steps_alone():
        with symmetry_memo():
            exactly_symmetric(sim)  # remembered: the solver starts no check
            t0 = time.perf_counter()
            solver.run(PLAIN, r, sim, k)
            return time.perf_counter() - t0

    n_threads = thread_count()
    one, default = (1, "one thread"), (None, f"{n_threads} threads")
    parts = [
        (FLOOR, None, lambda: sim.max()),
        *(
            (f"validation (min, max), {label}", count, lambda: _extremes(sim))
            for count, label in (one, default)
        ),
        *(
            (f"exact symmetry check, {label}", count, lambda: exactly_symmetric(sim))
            for count, label in (one, default)
        ),
        ("initial gains (one pass)", None, lambda: coverage_all(sim, w)),
    ]
    out = {}
    for name, count, fn in parts:
        with threads(count):
            out[name] = best_of(fn, 20, 2.0)[0]
    out["solver: initial gains + steps, symmetry already known"] = min(steps_alone() for _ in range(10))
    for count, label in ((1, "check first, one thread"), (None, f"check overlapped, {n_threads} threads")):
        with threads(count):
            out[f"solver: {label}"] = best_of(lambda: solver.run(PLAIN, r, sim, k), 10, 5.0)[0]
    return out


def target_cases(repeats: int, with_peers: bool, quick: bool) -> list[dict]:
    cases = []
    # N=576, k=64: the whole select call (validation, solver, value, certificate).
    r, sim = problem(576)
    for name, obj in (("plain (focus=0)", PLAIN), ("default (focus=0.5)", tops_core.Objective())):
        t, sel = best_of(lambda obj=obj: tops_core.select(r, sim, 64, objective=obj), 50, 5.0)
        ref = Greedy().run(obj, r, sim, 64)
        cases.append(
            {
                "case": f"N=576, k=64, {name}, auto",
                "time_s": t,
                "target_s": 3e-4,
                "same_as_greedy": bool(np.array_equal(sel.order, ref.order)),
            }
        )
    # N=2880, k=640 against the peers.
    r, sim = problem(2880)
    k = 640
    t, sel = best_of(lambda: tops_core.select(r, sim, k, objective=PLAIN), repeats, 10.0)
    with threads(1):
        t_one, sel_one = best_of(lambda: tops_core.select(r, sim, k, objective=PLAIN), repeats, 10.0)
    ref = Greedy().run(PLAIN, r, sim, k) if not quick else Lazy().run(PLAIN, r, sim, k)
    case = {
        "case": "N=2880, k=640, plain, auto",
        "time_s": t,
        "one_thread_s": t_one,
        "one_thread_same_as_greedy": bool(np.array_equal(sel_one.order, ref.order)),
        "target_s": 1e-2,
        "same_as_greedy": bool(np.array_equal(sel.order, ref.order)),
        "value": sel.value,
        "peers_s": {},
        "peer_same_set": {},
        "parts_s": where_time_goes(r, sim, k),
    }
    if with_peers:
        sim64 = sim.astype(np.float64)
        for compiled in (True, False):
            run = apricot_runner(compiled)
            for opt in ("naive", "lazy", "two-stage"):
                label = f"apricot {opt}" + ("" if compiled else " (stock, recompiles)")
                pt, order = best_of(
                    lambda run=run, opt=opt: run(sim64, k, opt), repeats if compiled else 2, 20.0
                )
                case["peers_s"][label] = pt
                case["peer_same_set"][label] = set(order.tolist()) == set(sel.order.tolist())
                case.setdefault("peer_value_gap", {})[label] = value_gap(r, sim, order, sel.value)
        best = None
        for _ in range(repeats):
            build, run_s, order = submodlib_run(sim, k)
            best = (build, run_s) if best is None or run_s < best[1] else best
        case["peers_s"]["submodlib lazy"] = best[1]
        case["peers_s"]["submodlib lazy (incl. build)"] = best[0] + best[1]
        case["peer_same_set"]["submodlib lazy"] = set(order.tolist()) == set(sel.order.tolist())
        case.setdefault("peer_value_gap", {})["submodlib lazy"] = value_gap(r, sim, order, sel.value)
        fastest_apricot = min(
            v for name, v in case["peers_s"].items() if name.startswith("apricot") and "stock" not in name
        )
        case["ratio_vs_apricot_fastest"] = fastest_apricot / t
        case["ratio_vs_submodlib_lazy"] = case["peers_s"]["submodlib lazy"] / t
        case["ratio_target"] = {"apricot": 30.0, "submodlib": 5.0}
    cases.append(case)
    # N=2880, k=1280: the paper's rule.
    rule = tops_core.TOPSRule()
    t, sel = best_of(lambda: tops_core.select(r, sim, 1280, objective=rule), 1 if quick else 10, 30.0)
    cases.append({"case": "N=2880, k=1280, TOPSRule, auto", "time_s": t, "target_s": 5e-2})
    return cases


_FEATURES_CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np
sys.path.insert(0, sys.argv[1])
import tops_core
sys.path.insert(0, sys.argv[1] + "/benchmarks")
from cpu import token_features

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

n, d, k = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = token_features(n, d=d, seed=3)
r = np.random.default_rng(4).random(n).astype(np.float32)
tops_core.select(r[:64], tops_core.Features(x[:64]), 8)  # compile the kernels first
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
tracemalloc.start()
t0 = time.perf_counter()
sel = tops_core.select(r, tops_core.Features(x), k)
dt = time.perf_counter() - t0
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"time_s": dt, "tracemalloc_peak_bytes": peak,
                  "rss_peak_growth_bytes": status("VmHWM") - base,
                  "input_bytes": x.nbytes, "value": sel.value, "method": sel.method}))
"""


def features_case(n: int, d: int, k: int, runs: int = 2) -> dict:
    """Features mode in fresh processes: the fastest run's time, the largest measured peak extra memory."""
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _FEATURES_CHILD, str(ROOT), str(n), str(d), str(k)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    res = min(results, key=lambda x: x["time_s"])
    for key in ("tracemalloc_peak_bytes", "rss_peak_growth_bytes"):
        res[key] = max(x[key] for x in results)
    res["runs"] = runs
    res.update(
        {
            "case": f"N={n}, d={d}, k={k}, features mode, auto (target stated for N=16384, d=1024, k=2048)",
            "target_s": 2.0,
            "target_bytes": 1e9,
            "dense_bytes": 4 * n * n,
        }
    )
    return res


# ------------------------------------------------------------------ reports
FLOOR = "one read of sim (np.max, the floor)"


def render_markdown(data: dict, plot_path: str = "assets/bench/cpu_scaling.png") -> str:
    """The Markdown tables of the docs, generated from the JSON only.

    One row per method and budget, the ratio to tops-prune in its own column;
    ``plot_path`` (relative to the page that includes the file) sits beside
    the sweep.
    """
    env = data["environment"]
    lines = [
        f"Measured by `{data['command']}` on {env['cpus']} CPU cores "
        f"({env['machine']}, Python {env['python']}, NumPy {env['versions']['numpy']}, "
        f"Numba {env['versions']['numba']}, apricot-select {env['versions']['apricot-select']}, "
        f"submodlib-py {env['versions']['submodlib-py']}); "
        f"{env.get('threads', 1)} tops-prune threads (TOPS_NUM_THREADS; the peers use one); "
        f"load average at start {env['load_at_start']:.2f} (shared machine: minimum over repeats). "
        "Float32 inputs.",
        "",
    ]
    lines += _targets_table(data["targets"])
    headline = next((c for c in data["targets"] if c.get("peers_s")), None)
    if headline is not None:
        lines += ["", *_peers_table(headline)]
    parts = next((c["parts_s"] for c in data["targets"] if c.get("parts_s")), None)
    if parts is not None:
        lines += ["", *_parts_table(parts)]
    lines += ["", *_sweep_table(data["sweep"], plot_path)]
    return "\n".join(lines) + "\n"


def _targets_table(targets: list[dict]) -> list[str]:
    lines = ["| case | tops-prune | target | met | checked |", "|---|---:|---|---|---|"]
    for c in targets:
        if "tracemalloc_peak_bytes" in c:
            checked = (
                f"peak extra memory {c['rss_peak_growth_bytes'] / 2**20:.0f} MiB (RSS growth), "
                f"{c['tracemalloc_peak_bytes'] / 2**20:.0f} MiB (tracemalloc); dense sim would be "
                f"{c['dense_bytes'] / 2**20:.0f} MiB"
            )
            met = c["time_s"] <= c["target_s"] and c["rss_peak_growth_bytes"] <= c["target_bytes"]
            target = f"<= {c['target_s']:.0f} s, <= 1 GB"
        else:
            checked = f"same order as greedy: {c['same_as_greedy']}" if "same_as_greedy" in c else ""
            met = c["time_s"] <= c["target_s"]
            target = f"<= {c['target_s'] * 1e3:g} ms"
        lines.append(
            f"| {c['case']} | {c['time_s'] * 1e3:.2f} ms | {target} | {'yes' if met else 'no'} | {checked} |"
        )
    return lines


def _peers_table(case: dict) -> list[str]:
    """The headline case against every peer: time, ratio, whether the set is greedy's, value gap."""
    ours = case["time_s"]
    lines = [
        f"{case['case'].split(', auto')[0]}, against the peers (ratio: the method's time over "
        "tops-prune's; same set: tops-prune's set, which is naive greedy's):",
        "",
        "| method | time (ms) | ratio | same set | value gap |",
        "|---|---:|---:|---|---:|",
        f"| tops-prune auto | {ours * 1e3:.1f} | 1.0x | {case['same_as_greedy']} | 0 |",
    ]
    if "one_thread_s" in case:
        t = case["one_thread_s"]
        lines.append(
            f"| tops-prune auto, one thread (TOPS_NUM_THREADS=1) | {t * 1e3:.1f} | {t / ours:.1f}x | "
            f"{case['one_thread_same_as_greedy']} | 0 |"
        )
    for name, t in case["peers_s"].items():
        base = name.replace(" (incl. build)", "")
        lines.append(
            f"| {name} | {t * 1e3:.1f} | {t / ours:.1f}x | {case['peer_same_set'][base]} | "
            f"{case['peer_value_gap'][base]:+.1e} |"
        )
    return lines


def _parts_table(parts: dict) -> list[str]:
    """Each part of one ``select`` call timed alone, in reads of ``sim`` (the floor)."""
    floor = parts[FLOOR]
    lines = [
        "Where the time goes at that size, each part timed alone:",
        "",
        "| part | time (ms) | reads of sim |",
        "|---|---:|---:|",
    ]
    for name, t in parts.items():
        lines.append(f"| {name} | {t * 1e3:.2f} | {t / floor:.1f} |")
    return lines


def _sweep_table(sweep: list[dict], plot_path: str) -> list[str]:
    """Time against N, one row per method and budget, beside the log-log plot."""
    gaps = [abs(g) for row in sweep for g in row.get("value_gap", {}).values()]
    lines = [
        "Time against N, k = 2N/9 (a method over the time budget is skipped at larger N). Ratio: "
        "the method's time over tops-prune auto's at the same N; same set: tops-prune's set. The "
        f"largest relative value gap of any peer's set to ours is {max(gaps, default=0):.1e}.",
        "",
        '<div class="side-by-side" markdown>',
        "",
        "<div markdown>",
        "",
        "| N | k | method | time (ms) | ratio | same set |",
        "|---:|---:|---|---:|---:|---|",
    ]
    for row in sweep:
        ours = row["times_s"]["tops auto"]
        for name, t in row["times_s"].items():
            same = row["same_set"].get(name.replace(" (incl. build)", ""), True)
            lines.append(f"| {row['n']} | {row['k']} | {name} | {t * 1e3:.1f} | {t / ours:.1f}x | {same} |")
    return [*lines, "", "</div>", "", f"![Time against N, log-log]({plot_path})", "", "</div>"]


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = []
    for row in data["sweep"]:
        methods += [m for m in row["times_s"] if m not in methods and "incl. build" not in m]
    for m in methods:
        pts = [(row["n"], row["times_s"][m]) for row in data["sweep"] if m in row["times_s"]]
        style = "-o" if m.startswith("tops") else "--s"
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], style, label=m, markersize=4)
    ax.set_xlabel("tokens N (k = 2N/9)")
    ax.set_ylabel("seconds (min over repeats)")
    ax.set_title("Exact greedy facility location on CPU, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 1152, one repeat for slow methods")
    parser.add_argument("--sizes", type=int, nargs="*", help="override N of the sweep")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--peer-budget",
        type=float,
        default=30.0,
        help="seconds per call after which a method is skipped at larger N",
    )
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument(
        "--features",
        type=int,
        nargs=3,
        default=(16384, 1024, 2048),
        metavar=("N", "D", "K"),
        help="features-mode case (default: the issue's long-video case)",
    )
    parser.add_argument("--no-features", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of cpu.json and cpu.md")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help=f"the plot (default: {PLOT.relative_to(ROOT)} with the default --out, else "
        "cpu_scaling.png inside --out)",
    )
    args = parser.parse_args(argv)
    plot_path = args.plot or (PLOT if args.out == RESULTS else args.out / "cpu_scaling.png")
    sizes = args.sizes or (SIZES[:3] if args.quick else SIZES)
    repeats = 2 if args.quick else args.repeats
    with_peers = not args.no_peers
    data = {
        "command": "python benchmarks/cpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": {
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "versions": peer_versions(),
            "load_at_start": os.getloadavg()[0],
            "threads": thread_count(),
        },
    }
    data["targets"] = target_cases(repeats, with_peers, args.quick)
    if not args.no_features:
        n, d, k = (2048, 256, 256) if args.quick else args.features
        data["targets"].append(features_case(n, d, k))
    data["sweep"] = sweep(sizes, repeats, args.peer_budget, with_peers)
    data["environment"]["load_at_end"] = os.getloadavg()[0]
    data["environment"]["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu.json").write_text(json.dumps(data, indent=2) + "\n")
    # the plot as the page that includes cpu.md sees it: the docs' asset, or beside cpu.md
    plot_ref = "assets/bench/cpu_scaling.png" if plot_path == PLOT else os.path.relpath(plot_path, args.out)
    (args.out / "cpu.md").write_text(render_markdown(data, plot_ref))
    plot(data, plot_path)
    print(render_markdown(data, plot_ref))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
