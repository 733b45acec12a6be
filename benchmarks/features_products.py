"""Features mode's two ways to build similarity rows, side by side: BLAS GEMM and the fixed-order kernel.

Run: ``python benchmarks/features_products.py`` (writes ``benchmarks/results/features_products.{json,md}``).
One block of rows times all columns (the shape of the features pass), float32, both routes on the
same data in one process; also whether this machine's BLAS passes the consistency probe (when it
does, ``Features`` uses BLAS; else the kernel).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from tops_core import features as features_mode

RESULTS = Path(__file__).parent / "results"


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(n: int, d: int, rows: int, repeats: int) -> dict:
    feats = features_mode.Features(np.random.default_rng(0).standard_normal((n, d)).astype(np.float32))
    idx = np.arange(rows)
    timings = {}
    for route in ("blas", "canonical"):
        features_mode.PRODUCTS = route
        feats.product(idx[:2])  # compile / warm up
        timings[route] = best_of(lambda: feats.product(idx), repeats)
    features_mode.PRODUCTS = "auto"
    return {
        "n": n,
        "d": d,
        "rows": rows,
        "blas_s": timings["blas"],
        "canonical_s": timings["canonical"],
        "ratio": timings["canonical"] / timings["blas"],
        "blas_consistent": features_mode.blas_is_consistent(np.dtype(np.float32), d),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.n, args.d, args.rows, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features_products.json").write_text(json.dumps(result, indent=2) + "\n")
    table = (
        "| rows x N x d (float32) | BLAS GEMM | fixed-order kernel | ratio | BLAS passes the probe |\n"
        "|---|---|---|---|---|\n"
        f"| {result['rows']} x {result['n']} x {result['d']} | {result['blas_s'] * 1e3:.0f} ms "
        f"| {result['canonical_s'] * 1e3:.0f} ms | {result['ratio']:.1f}x | {result['blas_consistent']} |\n"
    )
    (RESULTS / "features_products.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
