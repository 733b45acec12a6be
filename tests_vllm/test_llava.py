"""LLaVA in vLLM: stock vLLM at keep-all, transformers when pruned (see family_checks)."""

from typing import ClassVar

from family_checks import FamilyChecks


class TestLlava(FamilyChecks):
    family = "llava"
    # every image is resized and cropped to the 56-pixel CLIP input: 4 x 4 patches of 14
    grids: ClassVar[dict] = {"square": (4, 4), "tall": (4, 4), "wide": (4, 4)}
