"""Time of the exact MILP solver against N: where the size guard sits and why.

Run: ``python benchmarks/exact.py`` (writes ``benchmarks/results/exact.{json,md}``).
Random cosine similarities of Gaussian features (d = 16), CLS-like relevance,
default objective and one with the redundancy penalty; k = N/8 and N/4.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import tops_core
from tops_core import Exact, Objective

RESULTS = Path(__file__).parent / "results"


def run(sizes, repeats):
    rows = []
    for n in sizes:
        for frac in (8, 4):
            k = max(1, n // frac)
            for name, obj in (("coverage", Objective()), ("coverage+redundancy", Objective(redundancy=0.05))):
                times, gaps, optimal = [], [], True
                for seed in range(repeats):
                    rng = np.random.default_rng(seed)
                    sim = tops_core.cosine(rng.normal(size=(n, 16)))
                    scores = rng.dirichlet(np.ones(n))
                    start = time.perf_counter()
                    sel = tops_core.select(
                        scores, sim, k, objective=obj, method=Exact(max_n=max(n, 64), time_limit=60)
                    )
                    times.append(time.perf_counter() - start)
                    greedy = tops_core.select(scores, sim, k, objective=obj, method="lazy")
                    gaps.append(1 - greedy.value / sel.value)
                    optimal &= bool(sel.optimal)
                rows.append(
                    {
                        "n": n,
                        "k": k,
                        "objective": name,
                        "median_s": float(np.median(times)),
                        "max_s": float(np.max(times)),
                        "all_optimal": optimal,
                        "greedy_gap_max": float(np.max(gaps)),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def to_markdown(payload):
    lines = [
        f"Exact MILP (HiGHS) on {payload['machine']}; command: `{payload['command']}`.",
        "",
        "| N | k | objective | median time (s) | max time (s) | all proven optimal | greedy's worst gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['n']} | {r['k']} | {r['objective']} | {r['median_s']:.3f} | {r['max_s']:.3f} | "
            f"{'yes' if r['all_optimal'] else 'no'} | {100 * r['greedy_gap_max']:.2f}% |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 48, 64, 96])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    payload = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, 2 cores",
        "command": "python benchmarks/exact.py",
        "rows": run(args.sizes, args.repeats),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exact.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / "exact.md").write_text(to_markdown(payload))
    print(to_markdown(payload))


if __name__ == "__main__":
    main()
