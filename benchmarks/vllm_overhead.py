"""The vLLM plugin's cost on CPU: start-up, selection time per image, requests with and without pruning.

Run in the vLLM virtualenv (``make test-vllm`` or ``tools/vllm_env.sh`` builds it)::

    HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/vllm_overhead.py

(writes ``benchmarks/results/vllm_overhead.{json,md}``). One process, the tiny random Qwen2.5-VL of
``tests_vllm/tiny_models.py`` (saved weights, float32, eager): stock vLLM and the plugin at two
ratios side by side on the same images. The selection is timed inside the engine (``keep``, the
whole per-image work the plugin adds: similarity, position-aware kernel, ``tops_core.select``).
The tiny model's encoder and language model are far cheaper than a real one's, so the
end-to-end ratio here bounds the plugin's relative overhead from above; its absolute time per
image is what a real model pays too (the selection's cost depends on N, not on the model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: keep() timed here

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests_vllm"))
from tiny_models import save_tiny  # noqa: E402
from tops_adapters.vllm.pruning import PrunedModel  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>describe the picture<|im_end|>\n"
    "<|im_start|>assistant\n"
)
SIDES = (448, 672, 896)  # pixels: 16 x 16 = 256, 24 x 24 = 576 and 32 x 32 = 1024 merged tokens per image
# the tiny processor's own max_pixels would shrink the larger images to 256 tokens
ENGINE = dict(
    dtype="float32",
    enforce_eager=True,
    max_model_len=2048,
    kv_cache_memory_bytes=64 << 20,
    limit_mm_per_prompt={"image": 1, "video": 0},
    mm_processor_kwargs={"max_pixels": 1024 * 28 * 28},
)
SETTINGS = {
    "stock": None,
    "ratio 0.5 (tops)": {"ratio": 0.5},
    "ratio 0.25 (coverage, spatial)": {"ratio": 0.25, "objective": "coverage"},
}

_keep_seconds: list[float] = []
_keep_tokens: set[int] = set()


def _timed_keep(original):
    def keep(self, features, grid):
        start = time.perf_counter()
        kept = original(self, features, grid)
        _keep_seconds.append(time.perf_counter() - start)
        _keep_tokens.add(features.shape[0])
        return kept

    return keep


def start_up_seconds(model_dir: str, tops) -> float:
    """Time a fresh process that imports vLLM, starts an engine and exits (the plugin in or out)."""
    import subprocess

    code = "from vllm import LLM; LLM({!r}, hf_overrides={!r}, **{!r})".format(
        model_dir,
        {"tops_pruning": tops} if tops else None,
        ENGINE,
    )
    env = {**os.environ, "VLLM_PLUGINS": "" if tops is None else "tops_prune"}  # stock: no plugin loaded
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="requests (one image each) per batch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from PIL import Image
    from vllm import LLM, SamplingParams

    PrunedModel.keep = _timed_keep(PrunedModel.keep)
    model_dir = tempfile.mkdtemp(prefix="tiny-qwen2_5_vl-")
    save_tiny("qwen2_5_vl", model_dir)
    start_up = {name: start_up_seconds(model_dir, tops) for name, tops in SETTINGS.items()}
    engines = {}
    for name, tops in SETTINGS.items():  # every engine before any selection (vLLM 0.32 CPU and numba)
        engines[name] = LLM(
            model_dir, max_num_seqs=8, seed=0, hf_overrides={"tops_pruning": tops} if tops else None, **ENGINE
        )
    rng = np.random.default_rng(0)
    params = SamplingParams(max_tokens=1, temperature=0.0)
    rows = []
    for side in SIDES:
        batches = [
            [
                {
                    "prompt": PROMPT,
                    "multi_modal_data": {
                        "image": Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
                    },
                }
                for _ in range(args.images)
            ]
            for _ in range(args.repeats + 1)
        ]  # fresh images each batch: vLLM caches encoder outputs
        # round robin over the engines, each batch to every engine (each has its own encoder cache):
        # drift of a shared machine falls on all settings alike
        seconds = {name: [] for name in engines}
        keeps = {name: [] for name in engines}
        _keep_tokens.clear()
        for i, batch in enumerate(batches):
            for name, llm in engines.items():
                _keep_seconds.clear()
                start = time.perf_counter()
                llm.generate(batch, params, use_tqdm=False)
                if i:  # the first batch warms up (allocation at this size)
                    seconds[name].append((time.perf_counter() - start) / args.images)
                    keeps[name].extend(_keep_seconds)
        assert _keep_tokens <= {(side // 28) ** 2}, (side, _keep_tokens)  # the processor kept the size
        for name in engines:
            rows.append(
                {
                    "tokens": (side // 28) ** 2,
                    "setting": name,
                    "ms_per_image": 1e3 * statistics.median(seconds[name]),
                    "keep_ms_per_image": 1e3 * statistics.median(keeps[name]) if keeps[name] else 0.0,
                }
            )
    for row in rows:
        stock = next(r for r in rows if r["tokens"] == row["tokens"] and r["setting"] == "stock")
        row["ratio_to_stock"] = row["ms_per_image"] / stock["ms_per_image"]
    import vllm

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "vllm": vllm.__version__,
        "images_per_batch": args.images,
        "repeats": args.repeats,
        "start_up_s": start_up,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vllm_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "vllm_overhead.md").write_text(render_markdown(result))
    print(render_markdown(result))


def render_markdown(result: dict) -> str:
    """Render the results as the docs include them: start-up, then one row per image size and setting."""
    lines = [
        f"vLLM {result['vllm']} on {result['machine']}, tiny Qwen2.5-VL (float32, eager), "
        f"batches of {result['images_per_batch']} one-image requests, median of {result['repeats']}; "
        "`HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/vllm_overhead.py`.",
        "",
        "| engine | start-up (fresh process: import, engine, exit) |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {s:.1f} s |" for name, s in result["start_up_s"].items()]
    lines += [
        "",
        "| tokens per image | setting | request time per image | ratio to stock "
        "| selection (`keep`) per image |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['tokens']} | {r['setting']} | {r['ms_per_image']:.1f} ms | {r['ratio_to_stock']:.2f}x | "
        + (f"{r['keep_ms_per_image']:.2f} ms |" if r["setting"] != "stock" else "— |")
        for r in result["rows"]
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
