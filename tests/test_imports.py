"""The NumPy path never imports a framework (or SciPy) behind the user's back."""

import subprocess
import sys

import pytest

PROBE = """
import sys
import numpy as np
import tops_core
after_import = sorted(m for m in ("torch", "mlx", "scipy", "numba", "hypothesis") if m in sys.modules)
rng = np.random.default_rng(0)
f = rng.normal(size=(40, 8))
sim = tops_core.cosine(f)
for obj in (None, tops_core.TOPSRule(), tops_core.DPP(), tops_core.DivPrune()):
    tops_core.select(rng.random(40), sim, 8, objective=obj)
tops_core.select(rng.random(40), sim, 8, method="greedy")
after_select = sorted(m for m in ("torch", "mlx") if m in sys.modules)
print(after_import, after_select)
"""


@pytest.mark.slow
def test_numpy_path_imports_no_framework():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr


@pytest.mark.slow
def test_exact_imports_scipy_only_when_used():
    probe = (
        "import sys, numpy as np, tops_core\n"
        "tops_core.select(np.ones(4), np.eye(4), 2, method='exact')\n"
        "print('scipy' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True False"


@pytest.mark.parametrize("name", ["select", "Selection", "Objective", "TOPSRule", "normalize", "cosine"])
def test_public_names(name):
    import tops_core

    assert name in tops_core.__all__ and getattr(tops_core, name).__doc__
