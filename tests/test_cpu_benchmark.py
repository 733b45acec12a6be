"""The CPU benchmark writes where it is told and renders one row per method and budget."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("cpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(markdown: str, header: str) -> list[list[str]]:
    """The body rows of the table whose header row is ``header``."""
    lines = markdown.splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _data() -> dict:
    versions = {"numpy": "2", "numba": "0.6", "apricot-select": "0.6.1", "submodlib-py": "0.0.3"}
    parts = {"one read of sim (np.max, the floor)": 0.002, "exact symmetry check, one thread": 0.005}
    headline = {
        "case": "N=2880, k=640, plain, auto",
        "time_s": 0.020,
        "one_thread_s": 0.030,
        "one_thread_same_as_greedy": False,
        "target_s": 0.01,
        "same_as_greedy": True,
        "parts_s": parts,
        "peers_s": {"apricot lazy": 0.300, "submodlib lazy": 0.900, "submodlib lazy (incl. build)": 0.950},
        "peer_same_set": {"apricot lazy": False, "submodlib lazy": True},
        "peer_value_gap": {"apricot lazy": 0.0, "submodlib lazy": -8e-7},
    }
    sweep = [
        {
            "n": n,
            "k": k,
            "times_s": {"tops auto": t, "apricot lazy": 10 * t, "numpy greedy": 40 * t},
            "same_set": {"apricot lazy": n == 256, "numpy greedy": True},
            "value_gap": {"apricot lazy": 0.0},
        }
        for n, k, t in ((256, 57, 0.0005), (576, 128, 0.0011))
    ]
    return {
        "command": "python benchmarks/cpu.py",
        "targets": [headline],
        "sweep": sweep,
        "environment": {
            "cpus": 2,
            "machine": "x86_64",
            "python": "3.11",
            "versions": versions,
            "load_at_start": 0.5,
        },
    }


def test_every_method_and_budget_has_its_row_and_its_ratio(bench):
    text = bench.render_markdown(_data(), "plot.png")
    peers = _rows(text, "| method | time (ms) | ratio | same set | value gap |")
    assert [row[0] for row in peers] == [
        "tops-prune auto",
        "tops-prune auto, one thread (TOPS_NUM_THREADS=1)",
        "apricot lazy",
        "submodlib lazy",
        "submodlib lazy (incl. build)",
    ]
    assert [row[2] for row in peers] == ["1.0x", "1.5x", "15.0x", "45.0x", "47.5x"]
    assert [row[3] for row in peers] == ["True", "False", "False", "True", "True"]
    sweep = _rows(text, "| N | k | method | time (ms) | ratio | same set |")
    assert [(row[0], row[2], row[4]) for row in sweep] == [
        (n, method, ratio)
        for n in ("256", "576")
        for method, ratio in (("tops auto", "1.0x"), ("apricot lazy", "10.0x"), ("numpy greedy", "40.0x"))
    ]
    assert [row[5] for row in sweep if row[2] == "apricot lazy"] == ["True", "False"]
    parts = _rows(text, "| part | time (ms) | reads of sim |")
    assert [row[2] for row in parts] == ["1.0", "2.5"]
    assert "![Time against N, log-log](plot.png)" in text


def test_out_keeps_every_file_inside_it(bench, tmp_path):
    before = bench.PLOT.stat().st_mtime_ns if bench.PLOT.exists() else None
    bench.main(["--quick", "--no-peers", "--no-features", "--sizes", "64", "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.json", "cpu.md", "cpu_scaling.png"]
    assert (bench.PLOT.stat().st_mtime_ns if bench.PLOT.exists() else None) == before
    data = json.loads((tmp_path / "cpu.json").read_text())
    assert [row["n"] for row in data["sweep"]] == [64]
    assert "![Time against N, log-log](cpu_scaling.png)" in (tmp_path / "cpu.md").read_text()
