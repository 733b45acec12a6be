"""What differs between the supported model families: token ids, relevance source, layout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tops_core._validate import InvalidInputError

from .compat import image_size_to_num_patches

__all__ = ["Family", "family_of", "cls_layer", "next_layout"]


@dataclass(frozen=True)
class Family:
    """A supported architecture.

    ``mrope``: 3-D M-RoPE positions (Qwen2-VL / Qwen2.5-VL); they are kept as
    computed on the full sequence, so only the "original" position policy applies.
    """

    name: str
    has_cls: bool
    anyres: bool
    mrope: bool


_FAMILIES = {
    "llava": Family("llava", has_cls=True, anyres=False, mrope=False),
    "llava_next": Family("llava_next", has_cls=True, anyres=True, mrope=False),
    "qwen2_vl": Family("qwen2_vl", has_cls=False, anyres=False, mrope=True),
    "qwen2_5_vl": Family("qwen2_5_vl", has_cls=False, anyres=False, mrope=True),
}


def family_of(model) -> tuple[Family, torch.nn.Module]:
    """The family of a loaded model and its inner multimodal module (``model.model``)."""
    inner = model if hasattr(model, "language_model") else getattr(model, "model", None)
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if inner is None or not hasattr(inner, "language_model") or kind not in _FAMILIES:
        raise InvalidInputError(
            "model must be a Hugging Face LLaVA, LLaVA-NeXT, Qwen2-VL or Qwen2.5-VL model "
            f"(config.model_type in {sorted(_FAMILIES)}); got {type(model).__name__} with "
            f"model_type {kind!r}"
        )
    return _FAMILIES[kind], inner


def cls_layer(inner) -> torch.nn.Module:
    """The vision-encoder layer whose CLS attention is the Stage I relevance.

    It is the layer that produces the hidden state the projector reads
    (``vision_feature_layer``, the penultimate layer for LLaVA), as in FasterVLM.
    """
    tower = inner.vision_tower
    tower = getattr(tower, "vision_model", tower)  # older CLIPVisionModel wraps a transformer
    layers = tower.encoder.layers
    chosen = inner.config.vision_feature_layer
    if isinstance(chosen, (list, tuple)):
        chosen = chosen[-1]
    index = chosen % (len(layers) + 1)  # index into hidden_states (0 = embeddings)
    if index == 0:
        raise InvalidInputError(
            "relevance='cls' needs vision_feature_layer to name an encoder layer; got "
            f"vision_feature_layer={inner.config.vision_feature_layer} (the embeddings). "
            "Use relevance='uniform'"
        )
    return layers[index - 1]


def next_layout(inner, cls_rows: torch.Tensor | None, image_sizes, strategy: str):
    """Relevance, crop id and newline flag of every packed LLaVA-NeXT visual token.

    Runs the model's own ``pack_image_features`` on one-channel maps (CLS
    relevance, crop index) so the anyres permutation, unpadding and
    ``image_newline`` insertion are exactly the model's. Newline tokens come out
    as NaN.

    Returns
    -------
    relevance, crop, newline : torch.Tensor, each (T,) over all images' tokens
    """
    cfg = inner.config
    counts = [
        image_size_to_num_patches(image_size=size, grid_pinpoints=cfg.image_grid_pinpoints,
                                  patch_size=cfg.vision_config.image_size)
        for size in image_sizes
    ]
    side = cfg.vision_config.image_size // cfg.vision_config.patch_size
    per_crop = side * side + (0 if strategy == "default" else 1)
    device = image_sizes.device if isinstance(image_sizes, torch.Tensor) else None
    if cls_rows is None:
        cls_rows = torch.ones(sum(counts), per_crop, device=device)
    elif strategy == "default":
        cls_rows = cls_rows[:, 1:]  # the projector drops the CLS token
    crop = torch.cat([torch.arange(n, device=cls_rows.device) for n in counts]).float()
    crop = crop[:, None].expand(-1, per_crop)
    nan = torch.full((1,), float("nan"), device=cls_rows.device)
    maps = {}
    for name, values in (("relevance", cls_rows.float()), ("crop", crop)):
        split = torch.split(values[..., None], counts)
        packed, _ = inner.pack_image_features(split, image_sizes, strategy, image_newline=nan)
        maps[name] = torch.cat(packed)[:, 0]
    newline = torch.isnan(maps["crop"])
    return maps["relevance"].nan_to_num(0.0), maps["crop"].nan_to_num(-1).long(), newline
