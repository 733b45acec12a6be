"""PyTorch adapter: conversion, description and device checks for ``tops_core.select``."""

from __future__ import annotations

import numpy as np
import torch

from tops_core._validate import InvalidInputError

__all__ = ["describe", "to_numpy", "from_numpy", "check_pair", "select_native"]


def describe(x: torch.Tensor) -> str:
    """Shape, dtype and device of a tensor, for error messages."""
    return f"torch.Tensor with shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """Host copy as NumPy; half precision is widened to float32 (NumPy has no bfloat16)."""
    x = x.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x.cpu().numpy()


def from_numpy(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``arr`` as a tensor on ``like``'s device."""
    return torch.from_numpy(np.ascontiguousarray(arr)).to(like.device)


def check_pair(scores: torch.Tensor, sim: torch.Tensor) -> None:
    """Reject scores and sim on different devices."""
    if scores.device != sim.device:
        raise InvalidInputError(
            f"scores and sim must be on the same device; got scores as {describe(scores)} "
            f"and sim as {describe(sim)}"
        )


def select_native(scores, sim, k, objective, solver, reference):
    """On-device selection; ``None`` means "use the core through a host copy"."""
    return None
