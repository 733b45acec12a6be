"""Array type -> framework adapter, via ``sys.modules`` (never imports a framework).

A tensor of a framework that was never imported cannot exist, so looking the
framework up in ``sys.modules`` is enough to recognise its arrays.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import numpy as np

__all__ = ["framework_of", "adapter_for", "to_numpy"]

# framework name -> (module that defines the array type, attribute of the type)
_ARRAY_TYPES = {"torch": ("torch", "Tensor"), "mlx": ("mlx.core", "array")}


def framework_of(x: object) -> str:
    """Name the framework of ``x``: ``"numpy"``, ``"torch"`` or ``"mlx"``.

    Anything that is not a recognised framework array (lists, NumPy scalars)
    counts as ``"numpy"`` and goes through :func:`numpy.asarray`.
    """
    if isinstance(x, np.ndarray):
        return "numpy"
    for name, (module_name, attr) in _ARRAY_TYPES.items():
        module = sys.modules.get(module_name)
        if module is not None and isinstance(x, getattr(module, attr)):
            return name
    return "numpy"


def adapter_for(x: object) -> ModuleType | None:
    """The adapter module for ``x``'s framework, or ``None`` for NumPy."""
    name = framework_of(x)
    if name == "numpy":
        return None
    return importlib.import_module(f"tops_adapters.{name}")


def to_numpy(x: object) -> np.ndarray:
    """``x`` as a NumPy array (a host copy for framework arrays)."""
    adapter = adapter_for(x)
    return np.asarray(x) if adapter is None else adapter.to_numpy(x)
