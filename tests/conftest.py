"""Test session set-up: hypothesis profiles (deterministic with HYPOTHESIS_PROFILE=ci), Triton on CPU."""

import os

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
    "ci", derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# `make fuzz`: many random examples of tests/test_fuzz.py (its bounded run is part of CI).
settings.register_profile(
    "fuzz", max_examples=4000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
