"""What differs between the supported model families: token ids, relevance source, layout."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from tops_core._validate import InvalidInputError

from ..layouts import NO_LAYOUT_HINT, anyres_shape
from . import compat
from .compat import image_size_to_num_patches

__all__ = [
    "Family",
    "FAMILIES",
    "family_of",
    "cls_layer",
    "merge_cls",
    "next_layout",
    "packed_images",
    "tile_side",
    "LAYOUTS",
    "check_stage2_layers",
]


@dataclass(frozen=True)
class Family:
    """What one supported architecture needs; adding a family is one entry (plus, rarely, a hook).

    Attributes
    ----------
    name : str
        ``config.model_type``.
    label : str
        The name users know (support matrix, errors).
    has_cls : bool
        The vision encoder has a CLS token whose attention is the Stage I
        relevance (CLIP). SigLIP, Pixtral and the Qwen/GLM encoders have none:
        their relevance is the instruction (see :func:`~tops_adapters.hf.scores.instruction_relevance`).
    anyres : bool
        LLaVA-NeXT's packed anyres layout (crops, ``image_newline``) is
        reconstructed with the model's own ``pack_image_features`` for its
        relevance, crop budgets and newline policy.
    layout : str
        Where each visual token sits, for the position-aware similarity
        (:data:`LAYOUTS`).
    mrope : bool
        3-D M-RoPE positions; they are kept as computed on the full sequence,
        so only the "original" position policy applies, and ``rope_deltas`` is
        recomputed.
    language_model : str
        The attribute of the multimodal module holding the language model.
    deepstack : bool
        Qwen3-VL's deepstack: visual features added to the hidden states after
        the first decoder layers (``visual_pos_masks``,
        ``deepstack_visual_embeds``); they are gathered with the kept tokens.
    wrapper_mask : bool
        The multimodal module builds the per-layer-type mask mapping (full /
        sliding, bidirectional over image tokens) before the language model;
        it is rebuilt for the pruned sequence from the 2-D mask.
    stage2 : str
        ``"all"``: Stage II at any decoder layer; ``"full_attention"``: only at
        full-attention layers after the first (hybrid linear-attention models:
        linear-attention layers have no attention rows to rate with, and the
        first full-attention layer's KV cache sizes every mask, so it keeps the
        Stage I length);
        ``"none"``: no Stage II, for the reason in ``stage2_reason``.
    stage2_reason : str
        Why Stage II is restricted (support matrix, errors).
    min_transformers : str
        The oldest transformers release whose implementation of the family the
        integration supports.
    cls_merge : str
        How the projector merges encoder patches into visual tokens, so the CLS
        relevance follows: ``""`` (one patch per token) or ``"pixel_shuffle"``
        (InternVL: the model's own ``pixel_shuffle`` groups patches; a token's
        relevance is the CLS attention mass of its patches).
    notes : str
        Anything else a user of the family should know (support matrix).
    """

    name: str
    label: str
    has_cls: bool = False
    anyres: bool = False
    layout: str = "patches"
    mrope: bool = False
    language_model: str = "language_model"
    deepstack: bool = False
    wrapper_mask: bool = False
    stage2: str = "all"
    stage2_reason: str = ""
    min_transformers: str = "5.17.0"
    cls_merge: str = ""
    notes: str = ""

    def __post_init__(self):
        """Refuse an entry whose fields contradict each other (a typo would otherwise read as a policy)."""
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"Family {self.name!r}: layout must be one of {sorted(LAYOUTS)}; got {self.layout!r}"
            )
        if self.anyres and self.layout != "anyres":
            raise ValueError(f"Family {self.name!r}: anyres=True needs layout 'anyres'; got {self.layout!r}")
        if self.stage2 not in ("all", "full_attention", "none"):
            raise ValueError(
                f"Family {self.name!r}: stage2 must be 'all', 'full_attention' or 'none'; got {self.stage2!r}"
            )
        if self.stage2 != "all" and not self.stage2_reason:
            raise ValueError(f"Family {self.name!r}: stage2={self.stage2!r} needs its stage2_reason")
        if self.cls_merge not in ("", "pixel_shuffle"):
            raise ValueError(
                f"Family {self.name!r}: cls_merge must be '' or 'pixel_shuffle'; got {self.cls_merge!r}"
            )

    @property
    def packed(self) -> bool:
        """The model packs anyres crops and newlines with its ``pack_image_features``."""
        return self.layout == "anyres"


#: Each :attr:`Family.layout`: how the integration reads where every visual token sits.
LAYOUTS = {
    "patches": "one square patch grid per image (the CLS token its own grid under `full`)",
    "pooled": "one square grid of pooled tokens per image (`mm_tokens_per_image`)",
    "shuffled": "one square grid per tile, after the projector's pixel shuffle; tiles unrelated",
    "image_sizes": "each image's merged patch grid, from `image_sizes`",
    "anyres": "base and crops in one frame, read from the model's `pack_image_features`",
    "grid_thw": "each image's merged grid, from `image_grid_thw`",
}

FAMILIES = {
    f.name: f
    for f in (
        Family("llava", "LLaVA-1.5", has_cls=True),
        Family("llava_next", "LLaVA-NeXT", has_cls=True, anyres=True, layout="anyres"),
        Family(
            "llava_onevision",
            "LLaVA-OneVision",
            layout="anyres",
            notes="anyres crops and `image_newline` tokens are ordinary candidates of one joint budget, "
            "placed in the anyres frame",
        ),
        Family("qwen2_vl", "Qwen2-VL", mrope=True, layout="grid_thw"),
        Family("qwen2_5_vl", "Qwen2.5-VL", mrope=True, layout="grid_thw"),
        Family(
            "qwen3_vl",
            "Qwen3-VL",
            mrope=True,
            layout="grid_thw",
            deepstack=True,
            notes="q/k norms in the rater attention",
        ),
        Family(
            "qwen3_5",
            "Qwen3.5",
            mrope=True,
            layout="grid_thw",
            stage2="full_attention",
            notes="gated query (`q_proj` holds the output gate) and q/k norms in the rater attention",
            stage2_reason="linear-attention layers have no attention rows to rate with, and the model sizes "
            "every attention mask by the first full-attention layer's KV cache",
        ),
        Family(
            "glm4v",
            "GLM-4.1V / GLM-4.5V",
            mrope=True,
            layout="grid_thw",
            notes="partial, interleaved rotary: the rater attention rotates with the model's own "
            "`apply_rotary_pos_emb`",
        ),
        Family("mistral3", "Mistral 3", layout="image_sizes"),
        Family(
            "internvl",
            "InternVL",
            has_cls=True,
            cls_merge="pixel_shuffle",
            layout="shuffled",
            notes="CLS attention mass of the patches the projector's pixel shuffle merges into each token",
        ),
        Family("idefics3", "Idefics3", language_model="text_model", layout="shuffled"),
        Family("smolvlm", "SmolVLM", language_model="text_model", layout="shuffled"),
        Family(
            "gemma3",
            "Gemma 3",
            layout="pooled",
            wrapper_mask=True,
            stage2="none",
            stage2_reason="sliding-window layers keep a window of their own KV cache that a pruned "
            "layer cannot map",
        ),
    )
}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def family_of(model) -> tuple[Family, torch.nn.Module]:
    """The family of a loaded model and its inner multimodal module (``model.model``).

    Raises
    ------
    InvalidInputError
        If the model type is not in :data:`FAMILIES`, or the installed
        transformers is older than the family's ``min_transformers``.
    """
    kind = getattr(getattr(model, "config", None), "model_type", None)
    family = FAMILIES.get(kind)
    if family is None:
        labels = ", ".join(f"{f.name} ({f.label})" for f in FAMILIES.values())
        raise InvalidInputError(
            f"TOPS pruning does not support model_type {kind!r} ({type(model).__name__}); supported "
            f"model types: {labels}"
        )
    installed = compat.installed_transformers()
    if _version_tuple(installed) < _version_tuple(family.min_transformers):
        raise InvalidInputError(
            f"TOPS pruning of model_type {kind!r} needs transformers >= {family.min_transformers}; got "
            f"transformers {installed}"
        )
    inner = model if hasattr(model, family.language_model) else getattr(model, "model", None)
    if inner is None or not hasattr(inner, family.language_model):
        raise InvalidInputError(
            f"model_type {kind!r} needs a multimodal module with a {family.language_model!r} attribute "
            f"(the model or its .model); got {type(model).__name__}"
        )
    return family, inner


def check_stage2_layers(family: Family, config, layers) -> None:
    """Raise unless every Stage II layer index is one this family can prune at.

    Parameters
    ----------
    family : Family
    config : the multimodal model's config.
    layers : sequence of int, the schedule's Stage II layers.
    """
    if not layers:
        return
    text_config = config.get_text_config()
    if family.stage2 == "none":
        raise InvalidInputError(
            f"{family.label} ({family.name}) supports Stage I only: {family.stage2_reason}; got Stage II "
            f"layers {list(layers)}"
        )
    if family.stage2 == "full_attention":
        types = list(getattr(text_config, "layer_types", None) or [])
        allowed = [i for i, kind in enumerate(types) if kind == "full_attention"][1:]
        wrong = [i for i in layers if i not in allowed]
        if wrong:
            raise InvalidInputError(
                f"{family.label} ({family.name}) prunes in Stage II only at full-attention layers after the "
                f"first ({family.stage2_reason}): {allowed}; got Stage II layers {list(layers)}, of which "
                f"{wrong} are not"
            )
    if family.deepstack:
        depth = len(getattr(config.vision_config, "deepstack_visual_indexes", ()) or ())
        early = [i for i in layers if i < depth]
        if early:
            raise InvalidInputError(
                f"{family.label} ({family.name}) adds deepstack visual features to the hidden states after "
                f"decoder layers 0-{depth - 1}: Stage II layers must be >= {depth}; got {list(layers)}"
            )


def cls_layer(inner) -> torch.nn.Module:
    """The vision-encoder layer whose CLS attention is the Stage I relevance.

    It is the layer that produces the hidden state the projector reads
    (``vision_feature_layer``, the penultimate layer for LLaVA), as in FasterVLM.
    """
    tower = inner.vision_tower
    tower = getattr(tower, "vision_model", tower)  # older CLIPVisionModel wraps a transformer
    layers = getattr(tower.encoder, "layers", None) or tower.encoder.layer  # CLIP / InternViT
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


def merge_cls(inner, family: Family, cls_rows: torch.Tensor) -> torch.Tensor:
    """CLS relevance per visual token ``(C, T)`` from per-patch rows ``(C, P)`` (CLS dropped).

    InternVL: the projector's own ``pixel_shuffle`` on the one-channel map
    groups the patches exactly as it groups their features; a token gets the
    attention mass of its patches.
    """
    if family.cls_merge != "pixel_shuffle":
        return cls_rows
    crops, patches = cls_rows.shape
    side = int(patches**0.5)
    grid = cls_rows.reshape(crops, side, side, 1)
    merged = inner.pixel_shuffle(grid, scale_factor=inner.config.downsample_ratio)
    return merged.sum(dim=-1).reshape(crops, -1)


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
        image_size_to_num_patches(
            image_size=size, grid_pinpoints=cfg.image_grid_pinpoints, patch_size=cfg.vision_config.image_size
        )
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


def packed_images(pack, counts, per_crop: int, arguments: dict) -> list[tuple[int, int, int]]:
    """``(base, rows, columns)`` of every image as the model's own ``pack_image_features`` packs it.

    Runs ``pack`` (the unpatched method) with the arguments of the model's own
    call on one-channel maps (base 0, crops 1, newline NaN), so unpadding and
    OneVision's token cap are exactly the model's; then reads the structure
    back: the base tokens, then ``rows`` rows of ``columns`` crop tokens each
    closed by a newline (a base-only image: its base, then one newline).

    Parameters
    ----------
    pack : callable
        The model's ``pack_image_features``.
    counts : list of int
        Crops per image (the base image first), as the model split its features.
    per_crop : int
        Tokens per crop.
    arguments : dict
        The model's call's other arguments (``image_sizes``, strategy or aspect ratio).

    Raises
    ------
    InvalidInputError
        When a packed image is not laid out that way (a transformers change).
    """
    maps = [torch.cat([torch.zeros(1, per_crop, 1), torch.ones(n - 1, per_crop, 1)]) for n in counts]
    packed, _ = pack(maps, image_newline=torch.full((1,), float("nan")), **arguments)
    return [_structure(image[:, 0], per_crop) for image in packed]


def _structure(kind: torch.Tensor, base: int) -> tuple[int, int, int]:
    newline = torch.isnan(kind)
    rows, columns = anyres_shape(newline.numpy(), base, "pack_image_features")
    crops = kind[base:][~newline[base:]]
    if bool((kind[:base] != 0).any()) or bool((crops <= 0.5).any()) or crops.shape[0] != rows * columns:
        raise InvalidInputError(
            f"pack_image_features packed an image of {kind.shape[0]} tokens whose base and crop tokens "
            f"are not its {base} base tokens then the crops'. {NO_LAYOUT_HINT}"
        )
    return base, rows, columns


def tile_side(inner) -> int:
    """Tokens per side of one tile after the projector's pixel shuffle (InternVL, Idefics3, SmolVLM).

    The shuffle merges each ``r x r`` block of a tile's square patch grid into one
    token and leaves the tokens row-major on the merged grid (``r`` = 1 /
    ``downsample_ratio`` or ``scale_factor``).
    """
    config, vision = inner.config, inner.config.vision_config
    size, patch = vision.image_size, vision.patch_size
    side = (size[0] if isinstance(size, (list, tuple)) else size) // (
        patch[0] if isinstance(patch, (list, tuple)) else patch
    )
    ratio = getattr(config, "downsample_ratio", None)
    return int(side * ratio) if ratio is not None else side // config.scale_factor
