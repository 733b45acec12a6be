"""LLaVA-NeXT in vLLM (anyres crops, newlines kept): stock vLLM at keep-all, transformers when pruned."""

from typing import ClassVar

from family_checks import FamilyChecks
from tops_adapters.layouts import anyres_positions


def candidates_frame(rows, columns):
    """The base 4 x 4 patches and the crops' ``rows x columns`` tokens in the anyres frame, no newlines."""
    placed = anyres_positions(4, 16, rows, columns)
    return placed.subset([i for i in range(placed.n) if i < 16 or (i - 16) % (columns + 1) != columns])


class TestLlavaNext(FamilyChecks):
    family = "llava_next"
    # the base image's 4 x 4 patches and the crops' grid unpadded to the aspect ratio, in one frame:
    # 112 x 112 and 60 x 110 pixels fit the 2 x 2 crops of 56 (8 x 8 patches; 60 wide keeps
    # round(60 * 8 / 110) = 4 of 8 columns), 110 x 60 the 1 x 2 crops (4 x 8 patches, all kept)
    grids: ClassVar[dict] = {
        "square": candidates_frame(8, 8),
        "tall": candidates_frame(8, 4),
        "wide": candidates_frame(4, 8),
    }
