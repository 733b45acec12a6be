"""The array frameworks the tests run against, behind one small interface.

:data:`NATIVE` lists the frameworks with an adapter of their own (PyTorch, MLX),
:data:`ALL` adds NumPy. Each entry is a ``pytest.param`` that skips cleanly
when its framework is not installed; ``tests/conftest.py`` turns them into
the ``backend`` and ``native_backend`` fixtures.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


@dataclass(frozen=True)
class Backend:
    """One array framework: how to build its arrays and read them back."""

    name: str
    #: ``torch``, ``mlx.core`` or ``numpy``.
    module: Any
    #: The framework's adapter module (``tops_adapters.torch`` / ``.mlx``); ``None`` for NumPy.
    adapter: Any

    def dtype(self, name: str):
        """The framework's dtype called ``name`` (``"float32"``, ``"bfloat16"``, ``"int64"``, ...)."""
        if self.name == "numpy" and name == "bfloat16":
            pytest.skip("NumPy has no bfloat16")
        return getattr(self.module, name)

    def array(self, values, dtype: str | None = None):
        """``values`` (array-like) as an array of this framework, in ``dtype`` if given (else NumPy's)."""
        values = np.asarray(values)
        if self.name == "torch":
            out = self.module.tensor(values)
        elif self.name == "mlx":  # MLX would narrow float64 to float32: keep NumPy's dtype, as torch does
            name = "bool_" if values.dtype == np.bool_ else values.dtype.name
            out = self.module.array(values, dtype=getattr(self.module, name))
        else:
            out = values.copy()
        return out if dtype is None else self.cast(out, dtype)

    def cast(self, x, dtype: str):
        """``x`` converted to this framework's ``dtype``."""
        if self.name == "torch":
            return x.to(self.dtype(dtype))
        return x.astype(self.dtype(dtype))

    def numpy(self, x) -> np.ndarray:
        """A NumPy copy of ``x`` (bfloat16 and half read back as float32)."""
        if self.name == "torch":
            return (x.float() if x.dtype in (self.module.bfloat16, self.module.float16) else x).numpy()
        if self.name == "mlx":
            narrow = x.dtype in (self.module.bfloat16, self.module.float16)
            return np.array(x.astype(self.module.float32) if narrow else x)
        return np.asarray(x)

    def is_array(self, x) -> bool:
        """Whether ``x`` is an array of this framework."""
        kind = {"torch": "Tensor", "mlx": "array", "numpy": "ndarray"}[self.name]
        return isinstance(x, getattr(self.module, kind))

    def use_route(self, route: str):
        """The adapter's route context (``"core"``, ``"loop"``, ...); nothing to choose for NumPy."""
        return self.adapter.use_route(route) if self.adapter is not None else contextlib.nullcontext()

    def describe(self, x) -> str:
        """How an error message names ``x``: the adapter's description (NumPy: shape and dtype)."""
        if self.adapter is None:
            return f"shape {tuple(x.shape)}, dtype {x.dtype}"
        return self.adapter.describe(x)

    def __repr__(self) -> str:
        return self.name


def continuous(seed: int, n: int = 40, dim: int = 64, batch: int | None = None):
    """Scores and ``(1 + cos) / 2`` of random features (full rank for ``n <= dim``): no near-ties."""
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    feats = rng.normal(size=(*lead, n, dim))
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    return rng.random((*lead, n)), (1 + feats @ np.swapaxes(feats, -1, -2)) / 2


def load(name: str) -> Backend:
    """The :class:`Backend` called ``name`` (its framework must be installed)."""
    module_name, adapter_name = {
        "torch": ("torch", "tops_adapters.torch"),
        "mlx": ("mlx.core", "tops_adapters.mlx"),
        "numpy": ("numpy", None),
    }[name]
    module = importlib.import_module(module_name)
    adapter = importlib.import_module(adapter_name) if adapter_name else None
    return Backend(name, module, adapter)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _param(name: str, module: str):
    return pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(not installed(module), reason=f"needs {name} (an optional extra)"),
    )


NATIVE = [_param("torch", "torch"), _param("mlx", "mlx.core")]
ALL = [_param("numpy", "numpy"), *NATIVE]
