"""TOPS Stage I pruning in vLLM's Qwen2-VL, Qwen2.5-VL and Qwen3-VL: k placeholders, k kept tokens, M-RoPE.

How the pieces meet (vLLM sizes placeholders before the encoder runs, so k
depends on N and the settings only):

* the processor emits ``k = budget.tokens(N)`` placeholders per image;
* the image path selects k of the N merged tokens (on the merged patch grid
  ``(t, h / merge, w / merge)`` of ``image_grid_thw``) and appends each kept
  token's ``(t, h, w)`` grid offset as three extra channels, which travel with
  the embedding rows through vLLM's encoder cache and chunked prefill;
  Qwen3-VL's rows carry their deepstack levels, so those are kept with them;
* ``get_mrope_input_positions`` computes the parent's positions on the
  unpruned prompt and keeps the text's, each pruned image's placeholders
  taking the image's base position; ``embed_input_ids`` strips the channels
  into a persistent offset buffer that ``forward`` adds to the positions. The
  kept tokens thus sit at their original 3-D positions and the text after an
  image where it was, exactly as the transformers integration's
  ``positions="original"``.
"""

from __future__ import annotations

import numpy as np
import torch

from tops_core._validate import InvalidInputError

from .compat import (
    MULTIMODAL_REGISTRY,
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
    max_scheduled_tokens,
    with_offset,
    with_placeholders,
)
from .config import CONFIG_KEY
from .pruning import PrunedModel, PrunedPlaceholders

__all__ = [
    "MRoPEPruning",
    "TOPSQwen2VLForConditionalGeneration",
    "TOPSQwen2_5_VLForConditionalGeneration",
    "TOPSQwen3VLForConditionalGeneration",
]

# Largest integer each float dtype holds exactly: grid offsets ride in the embedding's dtype.
_EXACT_INTEGERS = {torch.bfloat16: 256, torch.float16: 2048}


class MRoPEPruning(PrunedModel):
    """Model mixin for the Qwen-VL families: selection on the merged grid, kept tokens' M-RoPE positions."""

    def start_pruning(self, vllm_config) -> None:
        """Allocate the per-token M-RoPE offsets the kept tokens' positions are shifted by."""
        # persistent, so a CUDA graph captured over forward reads this step's offsets
        self._tops_offsets = torch.zeros(3, max_scheduled_tokens(vllm_config), dtype=torch.long)

    def row_width(self) -> int:
        """Channels of an unpruned visual row (pruned image rows have 3 more)."""
        return self.config.text_config.hidden_size

    def selection_features(self, embeds: torch.Tensor) -> torch.Tensor:
        """The part of an image's rows the similarity is computed on."""
        return embeds

    # ------------------------------------------------------------ selection
    def _process_image_input(self, image_input):
        per_image = super()._process_image_input(image_input)
        if self.tops is None:
            return per_image
        merge = self.visual.spatial_merge_size
        grids = [(t, h // merge, w // merge) for t, h, w in image_input["image_grid_thw"].tolist()]
        return tuple(self._kept_rows(embeds, grid) for embeds, grid in zip(per_image, grids))

    def _kept_rows(self, embeds: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """The kept rows of one image's ``(N, width)`` tokens, each with its grid offset appended."""
        limit = _EXACT_INTEGERS.get(embeds.dtype)
        if limit is not None and max(grid) > limit:
            raise InvalidInputError(
                f"an image grid of {'x'.join(map(str, grid))} merged tokens needs offsets up to "
                f"{max(grid) - 1}, more than {embeds.dtype} holds exactly ({limit}); run with dtype "
                "float32 or smaller images"
            )
        kept = self.keep(self.selection_features(embeds), grid)
        dev = embeds.device
        offsets = torch.stack(
            torch.meshgrid(*(torch.arange(s, device=dev) for s in grid), indexing="ij")
        ).reshape(3, -1)
        return torch.cat([embeds[kept], offsets[:, kept].T.to(embeds.dtype)], dim=1)

    # ------------------------------------------------------------ positions
    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None):
        """Strip the offset channels of pruned images into the offset buffer, then merge as usual."""
        if self.tops is None:
            return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)
        offsets = self._tops_offsets
        if offsets.device != input_ids.device:
            offsets = self._tops_offsets = offsets.to(input_ids.device)
        offsets.zero_()
        if multimodal_embeddings is not None and len(multimodal_embeddings) > 0:
            width = self.row_width()
            stripped, rows = [], []
            for embeds in multimodal_embeddings:  # videos arrive without the channels
                pruned = embeds.shape[-1] == width + 3
                stripped.append(embeds[:, :width] if pruned else embeds)
                rows.append(
                    embeds[:, width:].long()
                    if pruned
                    else torch.zeros(embeds.shape[0], 3, dtype=torch.long, device=embeds.device)
                )
            where = is_multimodal.nonzero()[:, 0]
            offsets[:, where] = torch.cat(rows).T.to(offsets.device)
            multimodal_embeddings = stripped
        return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        """The model's forward with this step's M-RoPE offsets added to the positions."""
        if self.tops is not None and positions.ndim == 2:
            positions = positions + self._tops_offsets[:, : positions.shape[1]]
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)

    def get_mrope_input_positions(self, input_tokens, mm_features):
        """The parent's positions of the unpruned prompt, at the pruned prompt's tokens.

        Each pruned image's placeholders get the image's base position (its
        first token's); ``forward`` adds the kept tokens' grid offsets. Text
        and videos keep their positions, and the decode delta grows by the
        tokens pruning removed.
        """
        if self.tops is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        merge = self.config.vision_config.spatial_merge_size
        tokens, features, source = [], [], []  # the unpruned prompt; its index of each pruned token
        cursor = 0  # pruned prompt index reached

        def copy(stop: int) -> None:
            nonlocal cursor
            source.append(np.arange(stop - cursor) + len(tokens))
            tokens.extend(input_tokens[cursor:stop])
            cursor = stop

        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            copy(feature.mm_position.offset)
            if feature.modality != "image":
                features.append(with_offset(feature, len(tokens)))
                copy(cursor + feature.mm_position.length)
                continue
            n = int(feature.data["image_grid_thw"].data.prod()) // merge**2
            k = feature.mm_position.length
            if k != self.tops.tokens(n):
                raise InvalidInputError(
                    f"hf_overrides[{CONFIG_KEY!r}] keeps {self.tops.tokens(n)} of an image's {n} tokens; got "
                    f"a prompt with {k} placeholders for it (made by another processor?)"
                )
            features.append(with_placeholders(feature, len(tokens), n))
            source.append(np.full(k, len(tokens)))
            tokens.extend(input_tokens[cursor : cursor + 1] * n)
            cursor += k
        copy(len(input_tokens))
        positions, delta = super().get_mrope_input_positions(tokens, features)
        index = torch.from_numpy(np.concatenate(source))
        return positions[:, index], delta + len(tokens) - len(input_tokens)


# ---------------------------------------------------------------- the families
class TOPSQwen2VLProcessor(PrunedPlaceholders, Qwen2VLMultiModalProcessor):
    """Qwen2-VL's processor with ``budget.tokens(N)`` placeholders per image (videos unchanged)."""


@MULTIMODAL_REGISTRY.register_processor(
    TOPSQwen2VLProcessor,
    info=Qwen2VLProcessingInfo,
    dummy_inputs=Qwen2VLDummyInputsBuilder,
)
class TOPSQwen2VLForConditionalGeneration(MRoPEPruning, Qwen2VLForConditionalGeneration):
    """Qwen2-VL keeping ``budget.tokens(N)`` of each image's ``N`` merged tokens (Stage I)."""


class TOPSQwen2_5_VLProcessor(PrunedPlaceholders, Qwen2_5_VLMultiModalProcessor):
    """Qwen2.5-VL's processor with ``budget.tokens(N)`` placeholders per image (videos unchanged)."""


@MULTIMODAL_REGISTRY.register_processor(
    TOPSQwen2_5_VLProcessor,
    info=Qwen2_5_VLProcessingInfo,
    dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class TOPSQwen2_5_VLForConditionalGeneration(MRoPEPruning, Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL keeping ``budget.tokens(N)`` of each image's ``N`` merged tokens (Stage I)."""


class TOPSQwen3VLProcessor(PrunedPlaceholders, Qwen3VLMultiModalProcessor):
    """Qwen3-VL's processor with ``budget.tokens(N)`` placeholders per image (videos unchanged)."""


@MULTIMODAL_REGISTRY.register_processor(
    TOPSQwen3VLProcessor,
    info=Qwen3VLProcessingInfo,
    dummy_inputs=Qwen3VLDummyInputsBuilder,
)
class TOPSQwen3VLForConditionalGeneration(MRoPEPruning, Qwen3VLForConditionalGeneration):
    """Qwen3-VL keeping ``budget.tokens(N)`` of each image's ``N`` merged tokens (Stage I).

    Its image rows are the main features followed by the deepstack levels;
    the selection reads the main features and keeps whole rows, so every
    deepstack level keeps the same tokens.
    """

    def row_width(self) -> int:
        """Channels of an unpruned image row: the main features and the deepstack levels."""
        return self.visual_dim + self.multiscale_dim

    def selection_features(self, embeds: torch.Tensor) -> torch.Tensor:
        """The main features (the selection does not read the deepstack levels)."""
        return embeds[:, : self.visual_dim]
