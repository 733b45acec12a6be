"""Shared set-up for the vLLM plugin tests (run in .venv-vllm: tools/vllm_env.sh; not in the main suite)."""

import os

# before vLLM is imported: no hub, the engine in this process (its errors and its model reachable here);
# the engines size their KV cache themselves (kv_cache_memory_bytes)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import pytest
from tiny_models import save_tiny


def pytest_configure(config):
    # The main suite turns every warning into an error (pyproject). vLLM, torch and transformers
    # emit deprecations of their own at import and engine start-up (torch.jit.script_method,
    # ...), which this project cannot fix: report them, and keep warnings raised from this
    # project's code errors. Later ini entries take precedence.
    ours = ("tops_core", "tops_adapters", "test_", "family_checks", "tiny_models")
    for entry in ("default", *(f"error:::{module}" for module in ours)):
        config.addinivalue_line("filterwarnings", entry)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(family)``: the directory of that family's tiny saved model (built once)."""
    built = {}

    def get(family: str) -> str:
        if family not in built:
            path = tmp_path_factory.mktemp(f"tiny-{family}")
            save_tiny(family, path)
            built[family] = str(path)
        return built[family]

    return get


@pytest.fixture(scope="class")
def model_dir(request, tiny_model):
    """The tiny model of the test class's ``family`` (else the module's ``FAMILY``)."""
    return tiny_model(getattr(request.cls, "family", None) or request.module.FAMILY)
