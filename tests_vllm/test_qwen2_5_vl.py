"""Qwen2.5-VL in vLLM: stock vLLM at keep-all, transformers when pruned (see family_checks)."""

from typing import ClassVar

from family_checks import FamilyChecks


class TestQwen2_5_VL(FamilyChecks):
    family = "qwen2_5_vl"
    # the merged grid (t, h / 28, w / 28) of the square, tall and wide images (multiples of 28 pixels)
    grids: ClassVar[dict] = {"square": (1, 4, 4), "tall": (1, 8, 3), "wide": (1, 4, 9)}
