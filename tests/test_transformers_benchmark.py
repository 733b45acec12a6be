"""The GPU prefill benchmark's CPU smoke mode runs end to end and its table comes from its JSON."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prefill_gpu.py"


def load():
    spec = importlib.util.spec_from_file_location("prefill_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_smoke_run_writes_json_and_the_generated_table(tmp_path):
    bench = load()
    result = bench.main(["--tiny", "--warmup", "0", "--reps", "1", "--budgets", "10", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "prefill_gpu_tiny.json").read_text())
    assert saved == json.loads(json.dumps(result))
    rows = saved["rows"]
    assert [row["setting"] for row in rows] == ["unpruned", "TOPS stage I", "TOPS paper schedule"]
    assert rows[0]["llm_visual_tokens"] == saved["visual_tokens"] > 10
    assert rows[1]["llm_visual_tokens"] == [10]
    assert rows[2]["llm_visual_tokens"] == [20, 5, 2]  # 2T before the LLM, T/2 and T/4 inside
    for row in rows:
        assert row["speedup"] == pytest.approx(rows[0]["prefill_ms"] / row["prefill_ms"])
        assert 0 <= row["selection_share"] == pytest.approx(row["selection_ms"] / row["prefill_ms"])
    assert rows[1]["selection_ms"] > 0
    assert (tmp_path / "prefill_gpu_tiny.md").read_text() == bench.markdown(saved)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_benchmark_shapes_build_on_cuda(tmp_path):
    bench = load()
    result = bench.main(["--warmup", "0", "--reps", "1", "--budgets", "320", "--out", str(tmp_path)])
    assert result["visual_tokens"] == 2880 + 48  # 5 crops x 576 + image_newline tokens
