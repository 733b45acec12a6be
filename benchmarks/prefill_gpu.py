"""Prefill latency of LLaVA-NeXT-7B with TOPS pruning vs unpruned, selection share included.

Builds the LLaVA-NeXT-7B architecture (Vicuna-7B LLM + CLIP ViT-L/336, anyres
672 x 672 -> 5 crops x 576 = 2880 image tokens + 48 ``image_newline`` tokens)
with random bf16 weights on the GPU: latency does not depend on weight values.
Measures the median prefill (vision tower + projector + selection + LLM, batch
1, ``logits_to_keep=1``) unpruned and with TOPS keeping 640 / 320 / 160 visual
tokens (Stage I only, and the paper's schedule: 2T before the LLM, T/2 at layer
12, T/4 at layer 24), and the time spent in the selection itself (similarity,
relevance and ``tops_core.select``; CUDA-synchronised around each call).

Run (one command, on a CUDA machine)::

    python benchmarks/prefill_gpu.py

writes ``benchmarks/results/prefill_gpu.json`` and the Markdown table
``benchmarks/results/prefill_gpu.md`` generated from it. ``--tiny`` runs the
same code on a tiny random model on the CPU (a smoke test; it writes
``prefill_gpu_tiny.*`` and its figures mean nothing).

The selection runs wherever ``tops_core.select`` runs it: through a host copy
until the native PyTorch solver lands (``selection method`` ends in
``+host``). On the host the paper's rule costs O(K N^2): about 8 s for
K = 160 at N = 2928 on one CPU core, so a full run then takes several
minutes; ``--budgets 320`` and ``--objective objective`` (lazy greedy) shorten it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from tops_adapters.transformers import Schedule, enable

import tops_core

RESULTS = Path(__file__).resolve().parent / "results"

SHAPES = {
    # LLaVA-NeXT-7B (llava-v1.6-vicuna-7b): Vicuna-7B + CLIP ViT-L/14 at 336 px
    "llava-next-7b": dict(
        text=dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
        ),
        vision=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
        pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        image_size=[672, 672],
        budgets=[640, 320, 160],
        layers=(12, 24),
        text_tokens=(5, 35),
    ),
    # the same code path on a model small enough for a CPU smoke run
    "tiny": dict(
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=128,
            max_position_embeddings=1024,
        ),
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=16,
            patch_size=4,
            projection_dim=32,
        ),
        pinpoints=[[16, 32], [32, 16], [32, 32]],
        image_size=[32, 32],
        budgets=[40, 20, 10],
        layers=(1, 2),
        text_tokens=(3, 5),
    ),
}


def build(shape: dict, device: str, dtype: torch.dtype):
    """Random-weight LLaVA-NeXT of the given shapes, directly on ``device`` in ``dtype``."""
    text = transformers.LlamaConfig(**shape["text"])
    vision = transformers.CLIPVisionConfig(**shape["vision"])
    config = transformers.LlavaNextConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=text.vocab_size - 1,
        vision_feature_layer=-2,
        image_grid_pinpoints=shape["pinpoints"],
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.LlavaNextForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def make_inputs(model, shape: dict, device: str, dtype: torch.dtype):
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    config = model.config
    sizes = torch.tensor([shape["image_size"]], device=device)
    crops = image_size_to_num_patches(sizes[0], config.image_grid_pinpoints, config.vision_config.image_size)
    side = config.vision_config.image_size
    generator = torch.Generator(device="cpu").manual_seed(0)
    pixels = torch.randn(1, crops, 3, side, side, generator=generator).to(device, dtype)
    with torch.no_grad():
        n = sum(f.shape[0] for f in model.model.get_image_features(pixels, sizes).pooler_output)
    before, after = shape["text_tokens"]
    vocab = config.text_config.vocab_size - 1
    text = torch.randint(1, vocab, (before + after,), generator=generator)
    ids = torch.cat([text[:before], torch.full((n,), config.image_token_id), text[before:]])[None].to(device)
    return {"input_ids": ids, "pixel_values": pixels, "image_sizes": sizes}, n, crops


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_prefill(model, inputs, device, warmup, reps):
    with torch.no_grad():
        for _ in range(warmup):
            model(**inputs, logits_to_keep=1)
        times = []
        for _ in range(reps):
            sync(device)
            start = time.perf_counter()
            model(**inputs, logits_to_keep=1)
            sync(device)
            times.append(time.perf_counter() - start)
    return times


def timing_selection(session, device):
    """Wrap the session's selection step so every call is timed (CUDA-synchronised)."""
    spent, methods = [], set()
    choose = session._choose

    def timed(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        kept, selection = choose(*args, **kwargs)
        sync(device)
        spent.append(time.perf_counter() - start)
        for sel in selection if isinstance(selection, list) else [selection]:
            if sel is not None:
                methods.add(sel.method)
        return kept, selection

    session._choose = timed
    return spent, methods


def run(shape_name: str, device: str, warmup: int, reps: int, objective_name: str, budgets=None) -> dict:
    shape = SHAPES[shape_name]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = build(shape, device, dtype)
    inputs, n, crops = make_inputs(model, shape, device, dtype)
    objective = tops_core.TOPSRule() if objective_name == "tops-rule" else tops_core.Objective()
    rows = []
    base = timed_prefill(model, inputs, device, warmup, reps)
    rows.append(
        {
            "setting": "unpruned",
            "budget": None,
            "llm_visual_tokens": n,
            "prefill_ms": 1e3 * statistics.median(base),
            "prefill_ms_all": [1e3 * t for t in base],
            "selection_ms": 0.0,
            "selection_method": None,
        }
    )
    for budget in budgets or shape["budgets"]:
        for name, schedule in (
            ("stage I", Schedule(stage1=budget)),
            ("paper schedule", Schedule.paper(budget, layers=shape["layers"])),
        ):
            with enable(model, schedule, objective=objective, newlines="select") as session:
                spent, methods = timing_selection(session, device)
                times = timed_prefill(model, inputs, device, warmup, reps)
                kept = [record.kept.shape[1] for record in session.history]
            per_run = len(spent) // (warmup + reps)
            selection = [sum(spent[i * per_run : (i + 1) * per_run]) for i in range(warmup, warmup + reps)]
            rows.append(
                {
                    "setting": f"TOPS {name}",
                    "budget": budget,
                    "llm_visual_tokens": kept,
                    "prefill_ms": 1e3 * statistics.median(times),
                    "prefill_ms_all": [1e3 * t for t in times],
                    "selection_ms": 1e3 * statistics.median(selection),
                    "selection_method": sorted(methods),
                }
            )
    for row in rows:
        row["speedup"] = rows[0]["prefill_ms"] / row["prefill_ms"]
        row["selection_share"] = row["selection_ms"] / row["prefill_ms"]
    return {
        "benchmark": "prefill_gpu",
        "shape": shape_name,
        "command": "python " + " ".join(sys.argv),
        "device": (
            torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
        ),
        "dtype": str(dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "objective": objective_name,
        "visual_tokens": n,
        "crops": crops,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "warmup": warmup,
        "reps": reps,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    """The Markdown table, generated from the JSON (never typed by hand)."""
    lines = [
        f"Device: {result['device']} ({result['dtype']}); torch {result['torch']}, "
        f"transformers {result['transformers']}; model shapes: {result['shape']}; "
        f"{result['visual_tokens']} visual tokens ({result['crops']} crops incl. newlines), "
        f"prompt {result['prompt_tokens']} tokens; objective {result['objective']}; "
        f"median of {result['reps']} after {result['warmup']} warm-up runs.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| setting | budget T | visual tokens in LLM | prefill ms | speed-up | selection ms "
        "| selection share | selection method |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        tokens = row["llm_visual_tokens"]
        tokens = " → ".join(str(t) for t in tokens) if isinstance(tokens, list) else str(tokens)
        method = ", ".join(row["selection_method"]) if row["selection_method"] else "–"
        lines.append(
            f"| {row['setting']} | {row['budget'] or '–'} | {tokens} | {row['prefill_ms']:.1f} "
            f"| ×{row['speedup']:.2f} | {row['selection_ms']:.1f} | {100 * row['selection_share']:.1f}% "
            f"| {method} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random model on the CPU (smoke test)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--objective", choices=["tops-rule", "objective"], default="tops-rule")
    parser.add_argument("--budgets", type=int, nargs="+", default=None, help="default: 640 320 160")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or use --tiny for the CPU smoke run")
    warmup = args.warmup if args.warmup is not None else 1
    reps = args.reps if args.reps is not None else (1 if args.tiny else 3)
    result = run("tiny" if args.tiny else "llava-next-7b", device, warmup, reps, args.objective, args.budgets)
    name = "prefill_gpu_tiny" if args.tiny else "prefill_gpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
