"""Shared set-up for the vLLM plugin tests (run in .venv-vllm: tools/vllm_env.sh; not in the main suite)."""

import os

# before vLLM is imported: no hub, a small CPU KV cache, the engine in this process (its errors and
# its model reachable here)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import numpy as np
import pytest
from PIL import Image
from tiny_models import save_tiny_qwen2_5_vl

PROMPT = ("<|im_start|>user\n{images}describe the picture<|im_end|>\n<|im_start|>assistant\n")
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# (width, height) in pixels: multiples of 28, so N = (w / 28) * (h / 28) merged tokens
SIZES = {"square": (112, 112), "tall": (84, 224), "wide": (252, 112)}


def pytest_configure(config):
    # The main suite turns every warning into an error (pyproject). vLLM, torch and transformers
    # emit deprecations of their own at import and engine start-up (torch.jit.script_method,
    # ...), which this project cannot fix: report them, and keep warnings raised from this
    # project's code errors. Later ini entries take precedence.
    ours = ("tops_core", "tops_adapters", "test_", "family_checks", "tiny_models")
    for entry in ("default", *(f"error:::{module}" for module in ours)):
        config.addinivalue_line("filterwarnings", entry)


def prompt(images: int = 1) -> str:
    return PROMPT.format(images=IMAGE * images)


def image(kind: str, seed: int = 0) -> Image.Image:
    width, height = SIZES[kind]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def merged_tokens(kind: str) -> int:
    width, height = SIZES[kind]
    return (width // 28) * (height // 28)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen2_5_vl")
    save_tiny_qwen2_5_vl(path)
    return str(path)
