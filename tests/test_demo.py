"""The real-image demo, end to end on one small image and one budget (DINOv2-S/14 ONNX on CPU)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from tops_demo.cli import main
from tops_demo.encoder import SIZE, square_image
from tops_demo.fidelity import attention_mass, coverage_fraction, output_fidelity
from tops_demo.methods import METHODS, run_method, uniform_grid

import tops_core

# A real ViT (ONNX) on real images, end to end.
pytestmark = pytest.mark.slow

KEEP = 20


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import skimage.data
    import skimage.io

    folder = tmp_path_factory.mktemp("demo")
    image = folder / "cat_crop.png"
    skimage.io.imsave(image, skimage.data.chelsea()[40:260, 100:380])  # a user's own file
    out = folder / "out"
    code = main([str(image), "--keep", str(KEEP), "--out", str(out), "--random-draws", "3", "--quiet"])
    report = json.loads((out / "report.json").read_text())
    return code, out, report["images"]["cat_crop"]


def test_demo_writes_picture_and_reports(demo_run, capsys):
    code, out, _ = demo_run
    assert code == 0
    picture = out / "cat_crop.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(picture) as opened:
        width, height = opened.size
    assert width > (1 + len(METHODS)) * 100 and height > 100  # relevance map + a panel per method
    text = (out / "report.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in text
    table = (out / "tables" / "cat_crop.md").read_text().splitlines()
    assert len(table) == 2 + len(METHODS)  # header, rule, one row per method


def test_demo_table_has_every_method_with_measures_in_range(demo_run):
    _, _, result = demo_run
    (budget,) = result["table"]
    assert budget.endswith(f"({KEEP})")
    rows = result["table"][budget]
    assert list(rows) == list(METHODS)
    for method, row in rows.items():
        assert row["kept"] == KEEP, method
        kept = result["kept"][budget][method]
        assert len(set(kept)) == KEEP and min(kept) >= 0 and max(kept) < 256
        assert 0 < row["coverage"] <= 1
        assert -1 <= row["cls_fidelity"] <= 1 and -1 <= row["patch_fidelity"] <= 1
        assert 0 <= row["attention_mass"] <= 1
        assert 0 < row["f_over_ub"] <= 1 + 1e-12
        assert row["ms"] >= 0
    # Top-k attention keeps the most attention mass by construction.
    top = rows["top-k attention"]["attention_mass"]
    assert all(row["attention_mass"] <= top + 1e-12 for row in rows.values())
    # The certified objective's own certificate is within the shared (tighter or equal) bound.
    certified = rows["certified objective"]
    assert 0 < certified["certificate"] <= 1
    assert certified["f_over_ub"] >= certified["certificate"] - 1e-12


def test_unknown_image_name_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="neither a file nor a scikit-image sample"):
        main(["no-such-image", "--out", str(tmp_path), "--quiet"])


@pytest.mark.parametrize("shape", [(300, 451), (300, 451, 3), (500, 500, 4), (40, 90)])
def test_square_image_makes_224_rgb_in_unit_range(shape):
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    square = square_image(image)
    assert square.shape == (SIZE, SIZE, 3) and square.dtype == np.float32
    assert 0.0 <= square.min() and square.max() <= 1.0


def test_square_image_rejects_a_non_image():
    with pytest.raises(ValueError, match=r"image must be grey, RGB or RGBA; got shape \(8, 8, 2\)"):
        square_image(np.zeros((8, 8, 2)))


@pytest.mark.parametrize("k", [1, 7, 16, 57, 255, 256])
def test_uniform_grid_keeps_k_distinct_patches(k):
    idx = uniform_grid(k, 16)
    assert idx.size == k and np.unique(idx).size == k and idx.min() >= 0 and idx.max() < 256
    assert np.all(np.diff(idx) > 0)


def test_uniform_grid_of_a_square_count_is_a_lattice():
    rows, cols = np.divmod(uniform_grid(16, 16), 16)
    assert sorted(set(rows.tolist())) == [2, 6, 10, 14] and sorted(set(cols.tolist())) == [2, 6, 10, 14]


def test_fidelity_of_keeping_everything_is_perfect():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 10, 10))
    attention = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    values = rng.normal(size=(2, 10, 4))
    every = np.arange(9)
    cls, patches = output_fidelity(attention, values, every)
    assert cls == pytest.approx(1.0) and patches == pytest.approx(1.0)
    cls_one, _ = output_fidelity(attention, values, np.array([3]))
    assert cls_one < 1.0
    sim = tops_core.cosine(rng.normal(size=(9, 5)))
    assert coverage_fraction(sim, every) == pytest.approx(1.0)
    assert coverage_fraction(sim, np.array([0])) < 1.0
    relevance = rng.random(9)
    assert attention_mass(relevance, every) == pytest.approx(1.0)


def test_position_aware_method_selects_on_the_spatial_similarity():
    rng = np.random.default_rng(4)
    r = rng.random(256)
    sim = tops_core.cosine(rng.normal(size=(256, 8)))
    run = run_method("position-aware objective", r, sim, 20, 16, repeats=1)
    want = tops_core.select(r, tops_core.spatial(sim, (16, 16)), 20)
    assert run.indices.tolist() == np.asarray(want.indices).tolist()
    assert run.selection.upper_bound == want.upper_bound
