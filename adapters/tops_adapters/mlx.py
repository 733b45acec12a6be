"""MLX adapter: conversion, description and checks for ``tops_core.select``."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

__all__ = ["describe", "to_numpy", "from_numpy", "check_pair", "select_native"]


def describe(x: mx.array) -> str:
    """Shape and dtype of an MLX array, for error messages."""
    return f"mlx.core.array with shape {tuple(x.shape)}, dtype {x.dtype}"


def to_numpy(x: mx.array) -> np.ndarray:
    """Host copy as NumPy; bfloat16/float16 are widened to float32 first."""
    if x.dtype in (mx.bfloat16, mx.float16):
        x = x.astype(mx.float32)
    return np.array(x)


def from_numpy(arr: np.ndarray, like: mx.array) -> mx.array:
    """``arr`` as an MLX array."""
    return mx.array(arr)


def check_pair(scores: mx.array, sim: mx.array) -> None:
    """MLX arrays share unified memory: nothing to reconcile."""


def select_native(scores, sim, k, objective, solver, reference):
    """Native selection; ``None`` means "use the core through a host copy"."""
    return None
