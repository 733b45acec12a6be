"""Selection.ratio: the certificate as a fraction, in the caller's framework."""

import numpy as np
import pytest

import tops_core


def _problem():
    rng = np.random.default_rng(0)
    return rng.random(30).astype(np.float32), tops_core.cosine(rng.normal(size=(30, 8))).astype(np.float32)


def test_ratio_numpy_is_value_over_bound_and_one_for_empty():
    r, s = _problem()
    sel = tops_core.select(r, s, 5, method="greedy")
    assert sel.ratio == pytest.approx(sel.value / sel.upper_bound) and 0 < sel.ratio <= 1
    assert tops_core.select(r, s, 0).ratio == 1.0
    batched = tops_core.select(np.stack([r, r]), np.stack([s, s]), 5)
    assert batched.ratio.shape == (2,)


def test_ratio_stays_in_the_framework():
    torch = pytest.importorskip("torch")
    mx = pytest.importorskip("mlx.core")
    r, s = _problem()
    core = tops_core.select(r, s, 5, method="greedy")
    on_torch = tops_core.select(torch.from_numpy(r), torch.from_numpy(s), 5)
    assert isinstance(on_torch.ratio, torch.Tensor)
    assert float(on_torch.ratio) == pytest.approx(core.ratio, rel=1e-6)
    assert float(tops_core.select(torch.from_numpy(r), torch.from_numpy(s), 0).ratio) == 1.0
    on_mlx = tops_core.select(mx.array(r), mx.array(s), 5)
    assert isinstance(on_mlx.ratio, mx.array)
    assert float(on_mlx.ratio) == pytest.approx(core.ratio, rel=1e-6)
