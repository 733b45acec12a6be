"""Every dependency of the transformers integration on transformers' internals, in one place.

Checked against the transformers releases in :data:`TESTED_TRANSFORMERS`: the
extra ``tops-prune[transformers]`` declares that range and ``.ci/run`` runs the
integration tests on both of its ends (``make test-ends``).

What the integration relies on, beyond the public model classes:

* the KV cache is a :class:`transformers.cache_utils.Cache`, passed to the
  language model and returned in its output. 5.24 renamed the argument from
  ``past_key_values`` to ``cache``; it is found here by type, never by name;
* the multimodal module (``model.model``) exposes ``language_model``,
  ``get_image_features`` (whose output has ``pooler_output``) and, for
  LLaVA-NeXT, ``pack_image_features``; generate() may hand pre-encoded images
  to its forward as ``mm_encoder_outputs`` (5.2x);
* decoder layers take ``position_embeddings=(cos, sin)``, ``attention_mask``
  and ``position_ids`` as keyword arguments, the language model has
  ``rotary_emb``, and Qwen2-VL's multimodal module keeps ``rope_deltas``;
* attention modules expose ``q_proj``/``k_proj``, ``head_dim`` and ``scaling``,
  optionally ``q_norm``/``k_norm`` (Qwen3, Gemma 3) and a ``q_proj`` that also
  holds an output gate (Qwen3.5); their modeling module defines
  ``apply_rotary_pos_emb(q, k, cos, sin)`` (full, partial or interleaved
  rotary: the rater attention uses the model's own) (see
  :mod:`tops_adapters.hf.scores`);
* the language model's ``rotary_emb(x, position_ids[, layer_type])`` and the
  text config's ``layer_types`` (hybrid and sliding-window models);
* Qwen3-VL's language model takes ``visual_pos_masks`` and
  ``deepstack_visual_embeds`` (one ``(tokens, d)`` tensor per deepstack layer);
* Gemma 3's multimodal module builds a ``{layer_type: mask}`` mapping before
  the language model; the generation class's static
  ``create_masks_for_generate`` rebuilds it (see :func:`mask_mapping`).
"""

from __future__ import annotations

import inspect
import sys

from transformers.cache_utils import Cache

from tops_core._validate import InvalidInputError

__all__ = [
    "TESTED_TRANSFORMERS",
    "find_cache",
    "output_cache",
    "cache_argument",
    "image_size_to_num_patches",
    "encoded_images",
    "installed_transformers",
    "rotary_function",
    "rotary_embeddings",
    "layer_type",
    "mask_mapping",
    "DEEPSTACK_ARGUMENTS",
]

#: Qwen3-VL's language-model arguments that follow the visual tokens (gathered with the kept ones).
DEEPSTACK_ARGUMENTS = ("visual_pos_masks", "deepstack_visual_embeds")

#: The oldest and newest transformers releases the integration tests pass on.
TESTED_TRANSFORMERS = ("5.17.0", "5.24.0")

# The argument names a KV cache has had; used only to name a value that is not a Cache in an error.
_CACHE_NAMES = ("cache", "past_key_values")


def find_cache(args: tuple, kwargs: dict) -> Cache | None:
    """The KV cache among a forward's arguments, found by type (whatever its argument is called).

    Raises
    ------
    InvalidInputError
        If a cache argument holds something that is not a ``Cache`` (legacy
        tuples): the pruned sequence could not be mapped onto it.
    """
    for value in (*args, *kwargs.values()):
        if isinstance(value, Cache):
            return value
    for name in _CACHE_NAMES:
        value = kwargs.get(name)
        if value is not None:
            raise InvalidInputError(
                f"TOPS pruning needs the KV cache as a transformers Cache (e.g. DynamicCache); got {name} "
                f"as {type(value).__name__}"
            )
    return None


def output_cache(out) -> Cache | None:
    """The KV cache a language-model forward returned (``None`` when it kept none)."""
    values = out.values() if hasattr(out, "values") else out if isinstance(out, tuple) else ()
    for value in values:
        if isinstance(value, Cache):
            return value
    return None


def cache_argument(module) -> str:
    """The keyword under which ``module.forward`` takes the KV cache in the installed transformers."""
    parameters = inspect.signature(type(module).forward).parameters
    for name in _CACHE_NAMES:
        if name in parameters:
            return name
    raise InvalidInputError(
        f"{type(module).__name__}.forward takes no KV cache argument (looked for {', '.join(_CACHE_NAMES)})"
    )


def image_size_to_num_patches(image_size, grid_pinpoints, patch_size) -> int:
    """LLaVA-NeXT's count of anyres crops (plus the base image) for one image size."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches as count

    return count(image_size=image_size, grid_pinpoints=grid_pinpoints, patch_size=patch_size)


def encoded_images(kwargs: dict):
    """``(has_image, encoder_output)`` of a multimodal forward's arguments.

    ``encoder_output`` is generate()'s pre-encoded image output
    (``mm_encoder_outputs["image"]``) or ``None`` when the forward encodes
    ``pixel_values`` itself.
    """
    encoded = kwargs.get("mm_encoder_outputs") or {}
    image = encoded.get("image")
    return kwargs.get("pixel_values") is not None or image is not None, image


def installed_transformers() -> str:
    """The installed transformers release (``transformers.__version__``)."""
    import transformers

    return transformers.__version__


def rotary_function(attention):
    """The modeling module's ``apply_rotary_pos_emb(q, k, cos, sin)`` for an attention module.

    Each family's module defines its own (full, partial or interleaved
    rotary), so the rater attention rotates exactly as the layer does.
    """
    module = sys.modules[type(attention).__module__]
    apply = getattr(module, "apply_rotary_pos_emb", None)
    if apply is None:
        raise InvalidInputError(
            f"Stage II needs {module.__name__}.apply_rotary_pos_emb (the rotary of "
            f"{type(attention).__name__}); the installed transformers has none"
        )
    return apply


def layer_type(lm, index: int):
    """``config.layer_types[index]`` of a language model (``None`` where the model has one kind)."""
    types = getattr(lm.config, "layer_types", None)
    return types[index] if types else None


def rotary_embeddings(lm, hidden, position_ids, kind=None):
    """``(cos, sin)`` of ``position_ids`` from the language model's rotary embedding.

    Models with per-layer-type rotary (Gemma 3: local and global) take the
    layer type as a third argument.
    """
    parameters = inspect.signature(lm.rotary_emb.forward).parameters
    if "layer_type" in parameters:
        return lm.rotary_emb(hidden, position_ids, kind)
    return lm.rotary_emb(hidden, position_ids)


def mask_mapping(inner, inputs_embeds, attention_mask, cache, position_ids, token_type_ids):
    """Gemma 3's ``{layer_type: mask}`` mapping for a sequence, built as the model builds it.

    Uses the static ``create_masks_for_generate`` of the family's generation
    class (full and sliding-window layers; bidirectional over each image's
    tokens when ``token_type_ids`` is given).
    """
    module = sys.modules[type(inner).__module__]
    for value in vars(module).values():
        if isinstance(value, type) and "create_masks_for_generate" in vars(value):
            build = value.create_masks_for_generate
            break
    else:
        raise InvalidInputError(
            f"{module.__name__} defines no create_masks_for_generate in the installed "
            "transformers; the mask mapping cannot be rebuilt for the pruned sequence"
        )
    cache_name = next(name for name in _CACHE_NAMES if name in inspect.signature(build).parameters)
    return build(
        config=inner.config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        token_type_ids=token_type_ids,
        **{cache_name: cache},
    )
