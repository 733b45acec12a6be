"""Qwen2-VL in vLLM: stock vLLM at keep-all, transformers when pruned (see family_checks)."""

from typing import ClassVar

from family_checks import FamilyChecks


class TestQwen2VL(FamilyChecks):
    family = "qwen2_vl"
    # the merged grid (t, h / 28, w / 28) of the square, tall and wide images (multiples of 28 pixels)
    grids: ClassVar[dict] = {"square": (1, 4, 4), "tall": (1, 8, 3), "wide": (1, 4, 9)}
