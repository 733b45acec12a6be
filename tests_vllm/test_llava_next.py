"""LLaVA-NeXT in vLLM (anyres crops, newlines kept): stock vLLM at keep-all, transformers when pruned."""

from typing import ClassVar

from family_checks import FamilyChecks


class TestLlavaNext(FamilyChecks):
    family = "llava_next"
    # the base image's 4 x 4 patches, then the crops' grid unpadded to the aspect ratio: 112 x 112 and
    # 60 x 110 pixels fit the 2 x 2 crops of 56 (8 x 8 patches; 60 wide keeps round(60 * 8 / 110) = 4
    # of 8 columns), 110 x 60 the 1 x 2 crops (4 x 8 patches, all kept)
    grids: ClassVar[dict] = {"square": [(4, 4), (8, 8)], "tall": [(4, 4), (8, 4)], "wide": [(4, 4), (4, 8)]}
