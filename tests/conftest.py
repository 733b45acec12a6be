"""Hypothesis profiles: deterministic in CI (HYPOTHESIS_PROFILE=ci), random locally."""

import os

from hypothesis import HealthCheck, settings

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
