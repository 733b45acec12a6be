"""Each row's visual-token layout, as :func:`tops_core.spatial` takes it, for the model integrations.

Framework-free: the transformers and mlx-vlm integrations both read the layout here from what the
model tells (LLaVA's square patch grid; the ``image_grid_thw`` of the M-RoPE families, merged by the
vision tower's ``spatial_merge_size``), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from tops_core._validate import InvalidInputError

__all__ = ["Grid", "NO_LAYOUT_HINT", "square_grids", "merged_grids", "rows_of"]

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


def rows_of(grids: Sequence[Grid], b: int, n: int) -> list[list[Grid]]:
    """Split the batch's image grids into its ``b`` rows of ``n`` image tokens each.

    Images come in row order; ``generate()`` encodes each row's images once and
    repeats them for beams and ``num_return_sequences``, so ``b`` may be a
    multiple of the rows the grids cover (each row's layout is then repeated the
    same way).

    Parameters
    ----------
    grids : sequence of tuple
        Every image's token grid, in the batch's order.
    b : int
        Rows of the batch.
    n : int
        Image tokens per row.

    Returns
    -------
    list of list of tuple
        ``b`` layouts, each adding up to ``n`` tokens.

    Raises
    ------
    InvalidInputError
        When the grids do not split into rows of ``n`` tokens that ``b`` is a multiple of.
    """
    rows: list[list[Grid]] = []
    current: list[Grid] = []
    count = 0
    for grid in grids:
        current.append(tuple(grid))
        count += prod(grid)
        if count == n:
            rows.append(current)
            current, count = [], 0
        elif count > n:
            break
    if current or not rows or b % len(rows):
        sizes = [prod(g) for g in grids]
        raise InvalidInputError(
            f"image_grid_thw must give each of the {b} rows its {n} image tokens (whole images, in row "
            f"order); got grids of {sizes} tokens. {NO_LAYOUT_HINT}"
        )
    repeat = b // len(rows)
    return [row for row in rows for _ in range(repeat)]
