r"""TOPS visual-token pruning in vLLM: an out-of-tree plugin (Stage I, vision-side relevance).

Installed with ``tops-prune[vllm]``, vLLM loads it through the
``vllm.general_plugins`` entry point in every process; a model opts in
through vLLM's own ``hf_overrides``::

    from vllm import LLM
    llm = LLM("Qwen/Qwen2.5-VL-7B-Instruct",
              hf_overrides={"tops_pruning": {"ratio": 0.25, "objective": "tops"}})

    # or: vllm serve Qwen/Qwen2.5-VL-7B-Instruct \\
    #         --hf-overrides '{"tops_pruning": {"keep": 256}}'

Settings (see :mod:`tops_adapters.vllm.config`): exactly one of ``keep``
(tokens per image) or ``ratio`` (fraction of each image's ``N`` tokens, in
``(0, 1]``); ``objective`` (``tops``, ``coverage``, ``topk``, ``divprune``,
``scope``, ``dpp``); ``relevance`` (``uniform``, ``norm``); ``spatial``
(position-aware similarity for ``coverage``, on by default); ``record``.
Without the entry the model runs unpruned. Supported: Qwen2-VL, Qwen2.5-VL,
Qwen3-VL (:mod:`tops_adapters.vllm.qwen`), LLaVA and LLaVA-NeXT
(:mod:`tops_adapters.vllm.llava`). Every dependency on vLLM internals is in
:mod:`tops_adapters.vllm.compat`.
"""

from __future__ import annotations

__all__ = ["register", "ARCHITECTURES"]

#: Architecture name -> "module:Class" of the pruning subclass that overrides it.
ARCHITECTURES = {
    "Qwen2VLForConditionalGeneration": "tops_adapters.vllm.qwen:TOPSQwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration": "tops_adapters.vllm.qwen:TOPSQwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "tops_adapters.vllm.qwen:TOPSQwen3VLForConditionalGeneration",
    "LlavaForConditionalGeneration": "tops_adapters.vllm.llava:TOPSLlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration": "tops_adapters.vllm.llava:TOPSLlavaNextForConditionalGeneration",
}

_registered = False


def register() -> None:
    """Override the supported architectures in vLLM's registries (the entry point; idempotent).

    vLLM calls it in every process it starts; later calls change nothing.
    """
    global _registered
    if _registered:
        return
    from .compat import ModelRegistry

    for architecture, target in ARCHITECTURES.items():
        ModelRegistry.register_model(architecture, target)
    _registered = True
