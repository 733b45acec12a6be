"""TOPS Stage I pruning in vLLM's Qwen2.5-VL: k placeholders per image, k kept embeddings, M-RoPE positions.

How the pieces meet (vLLM sizes placeholders before the encoder runs, so k
depends on N and the settings only):

* the processor emits ``k = budget.tokens(N)`` image placeholders;
* the image path selects k of the N merged tokens with :func:`tops_core.select`
  on the model's device and appends each kept token's ``(t, h, w)`` grid offset
  as three extra channels, which travel with the embedding rows through vLLM's
  encoder cache and chunked prefill;
* ``get_mrope_input_positions`` gives a pruned image's k placeholders the
  image's base position and the text after it the positions of the unpruned
  prompt (they do not depend on which tokens are kept); ``embed_input_ids``
  strips the channels into a persistent offset buffer that ``forward`` adds to
  the positions. The kept tokens thus sit at their original 3-D positions,
  exactly as the transformers integration's ``positions="original"``.
"""

from __future__ import annotations

import numpy as np
import torch

import tops_core
from tops_core._validate import InvalidInputError

from ..hf.scores import cosine_similarity
from .compat import (
    MULTIMODAL_REGISTRY,
    PromptReplacement,
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
    max_scheduled_tokens,
)
from .config import CONFIG_KEY, pruning_config

__all__ = ["TOPSQwen2_5_VLProcessor", "TOPSQwen2_5_VLForConditionalGeneration"]

# Largest integer each float dtype holds exactly: grid offsets ride in the embedding's dtype.
_EXACT_INTEGERS = {torch.bfloat16: 256, torch.float16: 2048}
# How many recent selections a model keeps for inspection (LLM.apply_model in tests and debugging).
_RECORDS = 32


class TOPSQwen2_5_VLProcessor(Qwen2_5_VLMultiModalProcessor):
    """Qwen2.5-VL's processor with ``budget.tokens(N)`` placeholders per image (videos unchanged)."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        hf_config = self.info.get_hf_config()
        settings = pruning_config(hf_config)
        if settings is None:
            return updates
        merge = hf_config.vision_config.spatial_merge_size
        image_token = hf_config.image_token_id

        def image_placeholders(item_idx: int) -> list[int]:
            grid = out_mm_kwargs["image"][item_idx]["image_grid_thw"].data
            return [image_token] * settings.tokens(int(grid.prod()) // merge**2)

        return [PromptReplacement(modality="image", target=u.target, replacement=image_placeholders)
                if u.modality == "image" else u for u in updates]


@MULTIMODAL_REGISTRY.register_processor(
    TOPSQwen2_5_VLProcessor, info=Qwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class TOPSQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL that keeps ``budget.tokens(N)`` of each image's ``N`` merged tokens (Stage I).

    Configured by ``hf_overrides={"tops_pruning": {...}}`` (see
    :func:`tops_adapters.vllm.config.pruning_config`); without that entry it
    runs exactly as vLLM's own class. ``tops_records`` holds the latest
    selections (features, relevance, kept indices) for inspection.
    """

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.tops = pruning_config(self.config)
        self.tops_records: list[dict] = []
        if self.tops is None:
            return
        if self.is_multimodal_pruning_enabled:
            raise InvalidInputError(
                f"hf_overrides[{CONFIG_KEY!r}] cannot be combined with vLLM's video pruning (EVS), which "
                "appends its own position channels; need video_pruning_rate unset or 0, got "
                f"video_pruning_rate={self.video_pruning_rate}"
            )
        pipeline = vllm_config.parallel_config.pipeline_parallel_size
        if pipeline != 1:
            # the kept tokens' positions are found where the embeddings are merged: the first stage
            raise InvalidInputError(
                f"hf_overrides[{CONFIG_KEY!r}] needs pipeline_parallel_size=1; got {pipeline}"
            )
        self.hidden_size = self.config.text_config.hidden_size
        # persistent, so a CUDA graph captured over forward reads this step's offsets
        self._tops_offsets = torch.zeros(3, max_scheduled_tokens(vllm_config), dtype=torch.long)

    # ------------------------------------------------------------ selection
    def _process_image_input(self, image_input):
        per_image = super()._process_image_input(image_input)
        if self.tops is None:
            return per_image
        grids = image_input["image_grid_thw"].tolist()
        return tuple(self._keep(embeds, grid) for embeds, grid in zip(per_image, grids))

    def _keep(self, embeds: torch.Tensor, grid: list[int]) -> torch.Tensor:
        """The kept rows of one image's ``(N, hidden)`` tokens, each with its grid offset appended."""
        merge = self.visual.spatial_merge_size
        t, h, w = grid[0], grid[1] // merge, grid[2] // merge
        n = embeds.shape[0]
        k = self.tops.tokens(n)
        limit = _EXACT_INTEGERS.get(embeds.dtype)
        if limit is not None and max(t, h, w) > limit:
            raise InvalidInputError(
                f"an image grid of {t}x{h}x{w} merged tokens needs offsets up to {max(t, h, w) - 1}, more "
                f"than {embeds.dtype} holds exactly ({limit}); run with dtype float32 or smaller images"
            )
        dev = embeds.device
        if self.tops.relevance == "norm":
            relevance = embeds.float().norm(dim=-1)
        else:
            relevance = torch.ones(n, device=dev)
        if k < n:
            selection = tops_core.select(relevance, cosine_similarity(embeds[None])[0], k,
                                         objective=self.tops.selector())
            kept = torch.as_tensor(selection.indices, device=dev).long()
        else:
            kept = torch.arange(n, device=dev)
        self.tops_records = [*self.tops_records[-(_RECORDS - 1):],
                             {"features": embeds.detach().cpu(), "relevance": relevance.cpu(),
                              "kept": kept.cpu(), "grid": (t, h, w)}]
        offsets = torch.stack(torch.meshgrid(torch.arange(t, device=dev), torch.arange(h, device=dev),
                                             torch.arange(w, device=dev), indexing="ij")).reshape(3, -1)
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
            hidden = self.hidden_size
            stripped, rows = [], []
            for embeds in multimodal_embeddings:  # videos arrive without the channels
                pruned = embeds.shape[-1] == hidden + 3
                stripped.append(embeds[:, :hidden] if pruned else embeds)
                rows.append(embeds[:, hidden:].long() if pruned
                            else torch.zeros(embeds.shape[0], 3, dtype=torch.long, device=embeds.device))
            where = is_multimodal.nonzero()[:, 0]
            offsets[:, where] = torch.cat(rows).T.to(offsets.device)
            multimodal_embeddings = stripped
        return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        if self.tops is not None and positions.ndim == 2:
            positions = positions + self._tops_offsets[:, : positions.shape[1]]
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)

    def get_mrope_input_positions(self, input_tokens, mm_features):
        """The parent's positions, with each pruned image's placeholders at the image's base position.

        ``forward`` adds the kept tokens' grid offsets; the text after an image
        continues from the full grid, as in the unpruned prompt.
        """
        if self.tops is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        pieces: list[np.ndarray] = []
        cursor = next_position = 0  # prompt index reached; first position after what came before
        features = sorted(mm_features, key=lambda f: f.mm_position.offset)  # iter_mm_grid_thw's order
        for feature, (offset, t, h, w, t_factor) in zip(features, self.iter_mm_grid_thw(features)):
            text = offset - cursor
            pieces.append(np.broadcast_to(np.arange(text), (3, text)) + next_position)
            base = next_position + text
            if feature.modality == "image":
                count = feature.mm_position.length
                pieces.append(np.full((3, count), base))
                cursor = offset + count
                next_position = base + max(t, h, w)  # after the full grid, as unpruned
            else:
                grid = np.indices((t, h, w))
                if t_factor != 1.0:
                    grid[0] = (grid[0] * t_factor).astype(np.int64)
                pieces.append(grid.reshape(3, -1) + base)
                cursor = offset + t * h * w
                next_position = base + int(grid.max()) + 1
        text = len(input_tokens) - cursor
        pieces.append(np.broadcast_to(np.arange(text), (3, text)) + next_position)
        positions = np.concatenate(pieces, axis=1).astype(np.int64)
        return torch.from_numpy(positions), next_position + text - len(input_tokens)
