"""The anyres frame of tops_adapters.layouts: where packed LLaVA-NeXT / OneVision tokens sit.

Framework-free (NumPy only): the transformers and vLLM integrations both read their anyres layout here.
"""

import numpy as np
import pytest
from tops_adapters.layouts import Placed, anyres_positions, anyres_shape, joined, mixed

import tops_core
from tops_core import InvalidInputError


def test_base_patches_sit_at_their_centre_in_the_crops_grid():
    # a 2 x 2 base over crops packed 2 rows x 4 columns: a base patch covers 1 x 2 crop tokens
    placed = anyres_positions(2, 4, 2, 4)
    assert len(placed.positions) == 1 and placed.n == 4 + 2 * 5
    every = placed.positions[0]
    np.testing.assert_array_equal(every[:4], [[0, 0.5], [0, 2.5], [1, 0.5], [1, 2.5]])
    crops = [[r, c] for r in range(2) for c in range(5)]  # column 4: the row's newline
    np.testing.assert_array_equal(every[4:], crops)


def test_without_crops_the_frame_is_the_base_grid_closed_by_one_newline():
    placed = anyres_positions(2, 4, 0, 0)
    np.testing.assert_array_equal(placed.positions[0], [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]])


def test_the_cls_token_is_its_own_group():
    placed = anyres_positions(2, 5, 0, 0)
    assert [p.shape[0] for p in placed.positions] == [1, 5]
    g = mixed(np.ones((6, 6)), placed) - mixed(np.ones((6, 6)), Placed((np.zeros((6, 2)),)))
    assert (g[0, 1:] < 0).all() and (g[1:, 1:] <= 1e-12).all()  # CLS: no spatial tie to any patch


def test_a_base_that_is_not_the_square_grid_is_refused():
    with pytest.raises(
        InvalidInputError, match=r"must pack 4x4 patch tokens .* got 15 base tokens.*spatial=False"
    ):
        anyres_positions(4, 15, 2, 2)


def test_subset_keeps_the_chosen_tokens_places_and_groups_apart():
    placed = joined([anyres_positions(2, 5, 0, 0), anyres_positions(2, 4, 0, 0)])
    assert [p.shape[0] for p in placed.positions] == [1, 5, 5]
    part = placed.subset([1, 2, 8])  # two patches of the first image, one of the second
    assert [p.tolist() for p in part.positions] == [[[0, 0], [0, 1]], [[1, 0]]]
    sim = np.full((3, 3), 0.5)
    want = tops_core.spatial(sim, positions=[part.positions[0], part.positions[1]])
    np.testing.assert_array_equal(mixed(sim, part), want)
    assert want[0, 2] == want[1, 2] != want[0, 1]  # across images: no spatial tie however near


def test_layouts_are_equal_when_every_groups_positions_are():
    assert anyres_positions(2, 4, 2, 4) == anyres_positions(2, 4, 2, 4)
    assert anyres_positions(2, 4, 2, 4) != anyres_positions(2, 4, 4, 2)
    assert joined([anyres_positions(2, 4, 0, 0)] * 2) != Placed(
        (np.concatenate([anyres_positions(2, 4, 0, 0).positions[0]] * 2),)
    )
    assert anyres_positions(2, 4, 0, 0) != [(2, 2)]


def packed_newlines(base, rows, columns):
    """Which tokens of a packed image are newlines, built from the packing's definition."""
    row = [False] * columns + [True]
    return np.array([False] * base + (row * rows if rows else [True]))


def test_the_packed_shape_is_read_off_the_newlines():
    assert anyres_shape(packed_newlines(4, 2, 4), 4, "pack") == (2, 4)
    assert anyres_shape(packed_newlines(4, 3, 1), 4, "pack") == (3, 1)
    assert anyres_shape(packed_newlines(4, 0, 0), 4, "pack") == (0, 0)


@pytest.mark.parametrize(
    "newline",
    [
        np.zeros(10, dtype=bool),  # no newline at all
        packed_newlines(4, 2, 4)[::-1],  # newlines first
        np.r_[packed_newlines(4, 2, 4), False],  # a token after the last newline
        np.r_[packed_newlines(4, 1, 3), packed_newlines(0, 1, 2)],  # rows of different lengths
        np.array([False] * 4 + [True] * 3),  # rows without crop tokens
        np.array([False] * 4),  # only the base
    ],
)
def test_a_packing_of_another_shape_is_refused(newline):
    with pytest.raises(InvalidInputError, match=r"pack packed an image of \d+ tokens that is not its 4 base"):
        anyres_shape(newline, 4, "pack")


def test_subset_refuses_indices_out_of_order():
    with pytest.raises(InvalidInputError, match="where must be ascending token indices"):
        anyres_positions(2, 4, 0, 0).subset([2, 1])
