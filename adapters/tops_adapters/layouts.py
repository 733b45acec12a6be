"""Each row's visual-token layout, as :func:`tops_core.spatial` takes it, for the model integrations.

Framework-free: the transformers, mlx-vlm and vLLM integrations read the layout here from what the
model tells (LLaVA's square patch grid; the ``image_grid_thw`` of the M-RoPE families, merged by the
vision tower's ``spatial_merge_size``; the anyres packing of LLaVA-NeXT and LLaVA-OneVision), so they
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

import tops_core
from tops_core._validate import InvalidInputError

__all__ = [
    "Grid",
    "Placed",
    "NO_LAYOUT_HINT",
    "square_grids",
    "merged_grids",
    "sized_grids",
    "anyres_positions",
    "anyres_shape",
    "joined",
    "packed_rows",
    "rows_of",
    "mixed",
]

#: One image's token grid: ``(h, w)`` or ``(t, h, w)``, as :func:`tops_core.spatial` takes it.
Grid = tuple[int, ...]

#: What an error says a user can do when the layout cannot be read.
NO_LAYOUT_HINT = "Pass spatial=False to select on the plain similarity"


def square_grids(side: int, n: int, label: str, *, cls: bool = False) -> list[Grid]:
    """The layout of ``n`` tokens that are whole ``side x side`` patch grids (LLaVA-1.5's images).

    Parameters
    ----------
    side : int
        Patches per side (``image_size // patch_size``).
    n : int
        Image tokens in a row.
    label : str
        The family, for the error.
    cls : bool, default False
        Each image starts with its CLS token (the ``"full"`` feature strategy): a
        ``(1, 1)`` grid of its own, apart from the patches.

    Returns
    -------
    list of tuple
        One ``(side, side)`` grid per image (each preceded by ``(1, 1)`` with ``cls``).

    Raises
    ------
    InvalidInputError
        When ``n`` is not a whole number of such images.
    """
    per_image = side * side + (1 if cls else 0)
    if n == 0 or n % per_image:
        shape = f"{'1 + ' if cls else ''}{side}x{side}"
        raise InvalidInputError(
            f"spatial=True on {label} needs whole {shape} patch grids per image ({per_image} tokens each); "
            f"got {n} image tokens in a row (image features of another layout?). {NO_LAYOUT_HINT}"
        )
    one = [(1, 1), (side, side)] if cls else [(side, side)]
    return one * (n // per_image)


def merged_grids(grid_thw: Sequence[Sequence[int]], merge: int) -> list[Grid]:
    """The visual-token grids of the M-RoPE families' images (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4V).

    The vision tower merges each ``merge x merge`` window of patches into one
    token, and the tokens follow row-major order on the merged grid (the order
    the model's own M-RoPE positions assume).

    Parameters
    ----------
    grid_thw : sequence of (t, h, w)
        ``image_grid_thw``: each image's grid of patches, in the batch's order.
    merge : int
        The vision tower's ``spatial_merge_size``.

    Returns
    -------
    list of tuple
        ``(t, h // merge, w // merge)`` per image.

    Raises
    ------
    InvalidInputError
        When a grid is not three positive sizes whose ``h`` and ``w`` ``merge`` divides.
    """
    grids = []
    for index, thw in enumerate(grid_thw):
        sizes = tuple(int(s) for s in thw)
        if len(sizes) != 3 or min(sizes) < 1 or sizes[1] % merge or sizes[2] % merge:
            raise InvalidInputError(
                f"image_grid_thw[{index}] must be (t, h, w), positive, with h and w multiples of the "
                f"spatial merge size {merge}; got {sizes}. {NO_LAYOUT_HINT}"
            )
        grids.append((sizes[0], sizes[1] // merge, sizes[2] // merge))
    return grids


def sized_grids(image_sizes: Sequence[Sequence[int]], ratio: int) -> list[Grid]:
    """Each image's ``(H // ratio, W // ratio)`` token grid, from its pixel size (Mistral 3).

    Pixtral's patches (``patch_size`` pixels) are merged ``spatial_merge_size``
    squared by an unfold, row-major: ``ratio`` is their product.
    """
    return [(int(h) // ratio, int(w) // ratio) for h, w in image_sizes]


def rows_of(grids: Sequence, b: int, n: int, *, size=prod, source: str = "image_grid_thw") -> list[list]:
    """Split the batch's image layouts into its ``b`` rows of ``n`` image tokens each.

    Images come in row order; ``generate()`` encodes each row's images once and
    repeats them for beams and ``num_return_sequences``, so ``b`` may be a
    multiple of the rows the layouts cover (each row's layout is then repeated the
    same way).

    Parameters
    ----------
    grids : sequence
        Every image's layout (a token grid, or a :class:`Placed`), in the batch's order.
    b : int
        Rows of the batch.
    n : int
        Image tokens per row.
    size : callable, default ``math.prod``
        Tokens of one image's layout.
    source : str, default ``"image_grid_thw"``
        What the layouts were read from, for the error.

    Returns
    -------
    list of list
        ``b`` rows of image layouts, each adding up to ``n`` tokens.

    Raises
    ------
    InvalidInputError
        When the layouts do not split into rows of ``n`` tokens that ``b`` is a multiple of.
    """
    rows: list[list] = []
    current: list = []
    count = 0
    for grid in grids:
        current.append(grid)
        count += size(grid)
        if count == n:
            rows.append(current)
            current, count = [], 0
        elif count > n:
            break
    if current or not rows or b % len(rows):
        sizes = [size(g) for g in grids]
        raise InvalidInputError(
            f"{source} must give each of the {b} rows its {n} image tokens (whole images, in row "
            f"order); got images of {sizes} tokens. {NO_LAYOUT_HINT}"
        )
    repeat = b // len(rows)
    return [row for row in rows for _ in range(repeat)]


@dataclass(frozen=True, eq=False)
class Placed:
    """A layout given by explicit positions: one ``(N_i, 2)`` array per unrelated group of tokens.

    :func:`tops_core.spatial`'s ``positions=`` list: tokens of different arrays
    (images, a CLS token) are spatially unrelated. Equal when every group's
    positions are.
    """

    positions: tuple[np.ndarray, ...]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Placed):
            return NotImplemented
        return len(self.positions) == len(other.positions) and all(
            np.array_equal(a, b) for a, b in zip(self.positions, other.positions)
        )

    @property
    def n(self) -> int:
        """Tokens the layout places."""
        return sum(p.shape[0] for p in self.positions)

    def subset(self, where) -> Placed:
        """The layout of tokens ``where`` (ascending indices), groups kept apart."""
        index = np.asarray(where, dtype=np.int64)
        if index.ndim != 1 or (index.size > 1 and not bool((np.diff(index) > 0).all())):
            raise InvalidInputError(
                f"where must be ascending token indices; got an array of shape {index.shape}"
            )
        group = np.concatenate([np.full(p.shape[0], i) for i, p in enumerate(self.positions)])
        every = np.concatenate(self.positions)[index]
        chosen = group[index]
        return Placed(tuple(every[chosen == g] for g in np.unique(chosen)))


#: A row's layout: grids (the patches' own grid) or explicit positions.
Layout = list[Grid] | Placed


def mixed(sim, layout: Layout):
    """:func:`tops_core.spatial` of ``sim`` on ``layout`` (grids or :class:`Placed`), its defaults."""
    if isinstance(layout, Placed):
        return tops_core.spatial(sim, positions=list(layout.positions))
    return tops_core.spatial(sim, layout)


def anyres_positions(side: int, base: int, rows: int, columns: int) -> Placed:
    """Where the tokens of one packed anyres image (LLaVA-NeXT, LLaVA-OneVision) sit, in one frame.

    The packing is the base image's ``side x side`` patch grid (the whole image
    squeezed to a square), then the crops' grid, unpadded to the image's aspect
    ratio (and, for OneVision, shrunk to its token cap): ``rows`` rows of
    ``columns`` tokens, each row followed by an ``image_newline`` token. The
    frame is the crops' token grid, whose cells are square in the original
    image: crop token ``(R, C)`` sits at ``(R, C)``, base patch ``(r, c)`` at its
    centre there, ``((r + 1/2) rows / side - 1/2, (c + 1/2) columns / side - 1/2)``,
    so base and crop tokens showing the same place are near. A newline token
    sits just right of its row, ``(R, columns)``. Without crops (``rows == 0``:
    OneVision's multi-image prompts) the frame is the base grid and its one
    newline closes the last row.

    Parameters
    ----------
    side : int
        Patches per side of the base image.
    base : int
        Base tokens: ``side * side``, or one more with the CLS token first (the
        ``"full"`` feature strategy).
    rows, columns : int
        The crops' packed grid (0, 0 without crops).

    Returns
    -------
    Placed
        Every packed token, newlines included, in token order (the CLS token
        its own group, unrelated to the patches); :meth:`Placed.subset` keeps
        the candidates.

    Raises
    ------
    InvalidInputError
        When ``base`` is neither ``side * side`` nor one more.
    """
    if base not in (side * side, side * side + 1):
        raise InvalidInputError(
            f"the anyres base image must pack {side}x{side} patch tokens (one more with its CLS token); "
            f"got {base} base tokens. {NO_LAYOUT_HINT}"
        )
    cls = [np.zeros((1, 2))] if base == side * side + 1 else []
    r, c = (np.indices((side, side)).reshape(2, -1) + 0.5) / side
    if rows == 0:
        patches = np.stack([r * side - 0.5, c * side - 0.5], axis=1)
        return Placed((*cls, np.concatenate([patches, [[side - 1.0, float(side)]]])))
    patches = np.stack([r, c], axis=1) * np.array([rows, columns], dtype=np.float64) - 0.5
    crops = np.indices((rows, columns + 1)).reshape(2, -1).T.astype(np.float64)  # column `columns`: newline
    return Placed((*cls, np.concatenate([patches, crops])))


def anyres_shape(newline: np.ndarray, base: int, source: str) -> tuple[int, int]:
    """``(rows, columns)`` of one packed anyres image, read off which of its tokens are newlines.

    The packing :func:`anyres_positions` places: ``base`` tokens, then ``rows``
    rows of ``columns`` crop tokens each closed by a newline; or, without
    crops, the base and one newline (``(0, 0)``).

    Parameters
    ----------
    newline : array of bool, shape (T,)
        Which packed tokens are ``image_newline`` tokens.
    base : int
        Tokens of the base image.
    source : str
        What packed it, for the error.

    Raises
    ------
    InvalidInputError
        When the newlines are not where that packing puts them (an upstream change).
    """
    newline = np.asarray(newline, dtype=bool)
    total = newline.shape[0]
    rows = int(newline[base:].sum())
    columns = (total - base) // rows - 1 if rows else -1
    expected = np.zeros(total, dtype=bool)
    if rows and columns >= 0 and base + rows * (columns + 1) == total:
        expected[base + columns :: columns + 1] = True
    base_only = rows == 1 and columns == 0
    if not rows or not np.array_equal(newline, expected) or (columns == 0 and not base_only):
        raise InvalidInputError(
            f"{source} packed an image of {total} tokens that is not its {base} base tokens then rows "
            f"of crop tokens each closed by a newline. {NO_LAYOUT_HINT}"
        )
    return (0, 0) if base_only else (rows, columns)


def joined(images: Sequence[Placed]) -> Placed:
    """One row's layout from its images' (each image, and its CLS token, unrelated to the others)."""
    return Placed(tuple(part for image in images for part in image.positions))


def packed_rows(images: Sequence[Placed], b: int, n: int) -> list[Placed]:
    """Each of the ``b`` rows' layout from the batch's packed images, in row order (as :func:`rows_of`)."""
    rows = rows_of(images, b, n, size=lambda image: image.n, source="the anyres packing")
    return [joined(row) for row in rows]
