"""TOPS Stage I pruning in vLLM's LLaVA and LLaVA-NeXT: k placeholders and k kept tokens per image.

Their language models use 1-D RoPE: the pruned prompt is numbered
contiguously, as the paper (and the transformers integration's default for
these families) renumbers it, so nothing but the embeddings changes.

* LLaVA: an image is one patch grid (``image_size / patch_size`` per side,
  the CLS token first under the ``full`` feature strategy).
* LLaVA-NeXT: an image is the base image's patch grid, then the crops' grid
  unpadded to the image's aspect ratio with an ``image_newline`` token closing
  each row. The newline tokens are always kept and the budget applies to the
  others (the transformers integration's ``newlines="keep"``, one joint budget
  over base and crops: ``crops="joint"``); the position-aware similarity places
  base and crop tokens in one frame, the crops' token grid
  (:func:`~tops_adapters.layouts.anyres_positions`), as the transformers
  integration does.
"""

from __future__ import annotations

import torch

from tops_core._validate import InvalidInputError

from ..layouts import anyres_positions
from .compat import (
    MULTIMODAL_REGISTRY,
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaMultiModalProcessor,
    LlavaNextForConditionalGeneration,
    LlavaNextMultiModalProcessor,
    LlavaNextProcessingInfo,
    LlavaProcessingInfo,
    anyres_layout,
    image_size,
    llava_info,
    llava_stock_processor,
)
from .config import CONFIG_KEY, PruningConfig
from .pruning import PrunedModel, PrunedPlaceholders

__all__ = ["TOPSLlavaForConditionalGeneration", "TOPSLlavaNextForConditionalGeneration"]


def _patch_side(hf_config) -> int:
    vision = hf_config.vision_config
    return vision.image_size // vision.patch_size


class TOPSLlavaProcessor(PrunedPlaceholders, LlavaMultiModalProcessor):
    """LLaVA's processor with ``budget.tokens(N)`` placeholders per image."""


def _llava_processor(info, dummy_inputs):
    """The pruning processor for LLaVA, vLLM's own for the Pixtral-HF models sharing the architecture."""
    if isinstance(info, LlavaProcessingInfo):
        return TOPSLlavaProcessor(info, dummy_inputs)
    return llava_stock_processor(info, dummy_inputs)


@MULTIMODAL_REGISTRY.register_processor(
    _llava_processor, info=llava_info, dummy_inputs=LlavaDummyInputsBuilder
)
class TOPSLlavaForConditionalGeneration(PrunedModel, LlavaForConditionalGeneration):
    """LLaVA keeping ``budget.tokens(N)`` of each image's ``N`` visual tokens (Stage I)."""

    def start_pruning(self, vllm_config) -> None:
        """Refuse the Pixtral tower (variable image sizes): one patch grid per image is required."""
        if self.config.vision_config.model_type == "pixtral":
            raise InvalidInputError(
                f"hf_overrides[{CONFIG_KEY!r}] prunes LLaVA with a CLIP or SigLIP tower (one patch grid per "
                "image); got a Pixtral vision tower (variable image sizes), which is not supported"
            )

    def _process_image_input(self, image_input):
        per_image = super()._process_image_input(image_input)
        if self.tops is None:
            return per_image
        return tuple(embeds[self.keep(embeds, self._grid(embeds.shape[0]))] for embeds in per_image)

    def _grid(self, n: int):
        side = _patch_side(self.config)
        if n == side * side:
            return (side, side)
        if n == side * side + 1:  # the "full" feature strategy: the CLS token first, apart from the grid
            return [(1, 1), (side, side)]
        if not self.tops.spatial:
            return None
        raise InvalidInputError(
            f"hf_overrides[{CONFIG_KEY!r}]['spatial'] needs each image's patch grid ({side}x{side} tokens, "
            f"or 1 + {side * side} with the CLS token); got an image of {n} tokens (image embeddings of "
            "another layout?). Set spatial to false to select on the plain similarity"
        )


class TOPSLlavaNextProcessor(PrunedPlaceholders, LlavaNextMultiModalProcessor):
    """LLaVA-NeXT's processor: each image's newline tokens plus ``budget.tokens`` of its other tokens."""

    def kept_placeholders(self, settings: PruningConfig, n: int, mm_items, item_idx: int) -> int:
        size = image_size(mm_items, item_idx)
        if size is None:
            raise InvalidInputError(
                f"hf_overrides[{CONFIG_KEY!r}] prunes LLaVA-NeXT images by their anyres layout, which "
                "image embeddings do not carry; got image embeddings. Pass images"
            )
        width, height = size
        base, rows, columns = anyres_layout(self.info.get_hf_config(), height, width)
        if base + rows * (columns + 1) != n:
            raise InvalidInputError(
                f"a {width}x{height} image's anyres layout ({base} base + {rows} rows of {columns} + "
                f"newline) does not add up to the {n} tokens vLLM's processor gives it"
            )
        return settings.tokens(base + rows * columns) + rows


@MULTIMODAL_REGISTRY.register_processor(
    TOPSLlavaNextProcessor,
    info=LlavaNextProcessingInfo,
    dummy_inputs=LlavaDummyInputsBuilder,
)
class TOPSLlavaNextForConditionalGeneration(PrunedModel, LlavaNextForConditionalGeneration):
    """LLaVA-NeXT keeping its newline tokens and ``budget.tokens(P)`` of each image's ``P`` others.

    Stage I.
    """

    def _process_image_input(self, image_input):
        if self.tops is None:
            return super()._process_image_input(image_input)
        if image_input["type"] != "pixel_values":
            raise InvalidInputError(
                f"hf_overrides[{CONFIG_KEY!r}] prunes LLaVA-NeXT images by their anyres layout; got "
                f"{image_input['type']} inputs"
            )
        per_image = super()._process_image_input(image_input)
        sizes = image_input["image_sizes"].tolist()
        return tuple(
            self._kept_rows(embeds, height, width) for embeds, (height, width) in zip(per_image, sizes)
        )

    def _kept_rows(self, embeds: torch.Tensor, height: int, width: int) -> torch.Tensor:
        base, rows, columns = anyres_layout(self.config, height, width)
        if embeds.shape[0] != base + rows * (columns + 1):
            raise InvalidInputError(
                f"a {width}x{height} image packs {embeds.shape[0]} tokens; its anyres layout needs "
                f"{base} + {rows} x ({columns} + 1)"
            )
        dev = embeds.device
        index = torch.arange(embeds.shape[0], device=dev)
        newline = (index >= base) & ((index - base) % (columns + 1) == columns)
        candidates = index[~newline]
        side = _patch_side(self.config)
        placed = anyres_positions(side, base, rows, columns).subset(candidates.tolist())
        kept = candidates[self.keep(embeds[candidates], placed)]
        return embeds[torch.cat([kept, index[newline]]).sort().values]
