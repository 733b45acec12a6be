"""Qwen3-VL in vLLM (deepstack levels kept with their tokens).

Stock vLLM at keep-all, transformers when pruned.
"""

from typing import ClassVar

from family_checks import FamilyChecks


class TestQwen3VL(FamilyChecks):
    family = "qwen3_vl"
    # the merged grid (t, h / 32, w / 32) of the square, tall and wide images (multiples of 32 pixels)
    grids: ClassVar[dict] = {"square": (1, 4, 4), "tall": (1, 8, 3), "wide": (1, 4, 9)}
