"""Everything the mlx-vlm integration knows about mlx-vlm's internals, in one place.

Checked against mlx-vlm **0.6.8** (the declared floor) and **0.7.10**. The
family table :data:`FAMILIES` says, per ``config.model_type``, what differs
between the model families; :func:`support_matrix` renders it for the docs.
Adding a family is one table entry plus, where needed, one small hook in
:mod:`tops_adapters.mlx_vlm`.

Internals relied on (by name, so a rename fails loudly, not silently):

* ``Model.get_input_embeddings(input_ids, pixel_values, **kw)`` returns
  ``mlx_vlm.models.base.InputEmbeddingsFeatures`` (a dataclass) in both versions.
* ``Model.language_model`` is called as ``(inputs, inputs_embeds, ..., cache=...)``
  and its KV caches carry ``offset`` (an int, or an array for batch caches).
* ``mlx_vlm.generate.ar.BatchGenerator.insert(prompts, ..., attention_mask=)``
  receives the prompt token rows that ``batch_generate`` tokenised.
* The CLIP vision tower of LLaVA / LLaVA-NeXT: ``vision_tower.vision_model.encoder.layers``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

__all__ = [
    "TESTED_VERSIONS",
    "Family",
    "FAMILIES",
    "MLX_VLM_VERSION",
    "family_of",
    "cache_offset",
    "swap_call",
    "clip_encoder_layers",
    "version_at_least",
    "stage2_supported",
    "stage2_reason",
    "decoder_layers",
    "install_batch_hook",
    "support_matrix",
]

TESTED_VERSIONS = ("0.6.8", "0.7.10")


def _installed_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlx-vlm")
    except Exception:
        return "unknown"


MLX_VLM_VERSION = _installed_version()


def version_at_least(minimum: str) -> bool:
    """Whether the installed mlx-vlm is at least ``minimum`` (numeric parts compared)."""

    def parts(text):
        return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())

    return MLX_VLM_VERSION != "unknown" and parts(MLX_VLM_VERSION) >= parts(minimum)


@dataclass(frozen=True)
class Family:
    """What one mlx-vlm model family needs from the integration.

    Attributes
    ----------
    model_type : ``config.model_type`` of the mlx-vlm ``Model``.
    label : the name people know it by (docs).
    module : ``mlx_vlm.models.<module>``; its absence means the installed
        mlx-vlm lacks the family.
    cls : how CLS attention maps onto the image tokens: ``"per_image"`` (one
        CLIP crop per image, LLaVA), ``"first_crop"`` (LLaVA-NeXT in mlx-vlm
        places only the base crop), or ``None`` (no CLS token: SigLIP, Pixtral,
        Qwen ViTs — relevance comes from the instruction).
    positions : ``"offset"`` (1-D RoPE placed by the KV-cache offset: kept
        tokens are renumbered contiguously) or ``"mrope"`` (3-D positions
        computed on the full prompt and gathered; ``rope_deltas`` recomputed).
    expands_placeholder : the prompt holds one image token per image and the
        model expands it into the features (LLaVA-NeXT in mlx-vlm).
    row_aligned : ``InputEmbeddingsFeatures`` fields with a sequence axis 1
        that are gathered with the kept columns.
    square_mask : the field holding a ``(B, 1, L, L)`` mask (rows and columns
        gathered), Gemma 3.
    deepstack : Qwen3-VL's per-layer visual features, gathered with the kept
        visual tokens.
    layer_masks : the language model hands its layers mask arrays (Gemma 3's
        sliding-window layers); Stage II rebuilds them for the pruned sequence.
    packed : the model packs anyres tiles and ``image_newline`` tokens with
        its ``pack_image_features`` (LLaVA-OneVision): the position-aware
        layout is read from that packing (:func:`record_packing`).
    batch_since : the first tested mlx-vlm whose own model takes a batch of
        prompts (``None``: none does) — where ``batch_generate`` can prune.
    min_version : the first tested mlx-vlm with the family.
    notes : what the family needed (docs).
    """

    model_type: str
    label: str
    module: str
    cls: str | None = None
    positions: str = "offset"
    expands_placeholder: bool = False
    row_aligned: tuple = ()
    square_mask: str | None = None
    deepstack: bool = False
    layer_masks: bool = False
    packed: bool = False
    batch_since: str | None = "0.6.8"
    min_version: str = "0.6.8"
    notes: str = ""

    @property
    def batches(self) -> bool:
        """Whether the installed mlx-vlm's model of this family takes a batch of prompts."""
        return self.batch_since is not None and version_at_least(self.batch_since)

    @property
    def available(self) -> bool:
        """Whether the installed mlx-vlm ships this family."""
        try:
            importlib.import_module(f"mlx_vlm.models.{self.module}")
        except ImportError:
            return False
        return True


FAMILIES = {
    f.model_type: f
    for f in (
        Family(
            "llava",
            "LLaVA 1.5",
            "llava",
            cls="per_image",
            notes="CLS attention of the penultimate CLIP layer",
        ),
        Family(
            "llava_next",
            "LLaVA-NeXT",
            "llava_next",
            cls="first_crop",
            expands_placeholder=True,
            batch_since=None,
            notes="one `<image>` token expanded inside the model: columns found from the embeddings' "
            "length; no batch (mlx-vlm merges one image per call)",
        ),
        Family(
            "llava_onevision",
            "LLaVA-OneVision",
            "llava_onevision",
            min_version="0.7.10",
            packed=True,
            notes="SigLIP (no CLS): instruction relevance; anyres tiles and newlines placed by the "
            "model's `pack_image_features`; not in mlx-vlm 0.6.8",
        ),
        Family(
            "qwen2_vl",
            "Qwen2-VL",
            "qwen2_vl",
            positions="mrope",
            notes="M-RoPE positions gathered, `rope_deltas` recomputed",
        ),
        Family("qwen2_5_vl", "Qwen2.5-VL", "qwen2_5_vl", positions="mrope", notes="as Qwen2-VL"),
        Family(
            "qwen3_vl",
            "Qwen3-VL",
            "qwen3_vl",
            positions="mrope",
            row_aligned=("visual_pos_masks",),
            deepstack=True,
            notes="`visual_pos_masks` and every `deepstack_visual_embeds` layer gathered; Stage II "
            "only after the layers the deepstack features enter",
        ),
        Family(
            "gemma3",
            "Gemma 3",
            "gemma3",
            square_mask="attention_mask_4d",
            layer_masks=True,
            notes="SigLIP (no CLS); the `(B, 1, L, L)` `attention_mask_4d` gathered on both axes; "
            "Stage II rebuilds the sliding-window masks and rates within the window",
        ),
        Family("idefics3", "Idefics3", "idefics3", notes="SigLIP (no CLS); language model without `.model`"),
        Family(
            "smolvlm",
            "SmolVLM",
            "smolvlm",
            batch_since="0.7.10",
            notes="as Idefics3; mlx-vlm 0.6.8 merges a batch's images into the wrong rows",
        ),
        Family(
            "mistral3",
            "Mistral 3",
            "mistral3",
            notes="Pixtral (no CLS); `[IMG_BREAK]`/`[IMG_END]` stay as text",
        ),
    )
}


def family_of(model) -> Family | None:
    """The :class:`Family` of an mlx-vlm ``Model`` (``None`` if unsupported)."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    return FAMILIES.get(kind)


def image_token_id(model) -> int:
    """The image placeholder id (``image_token_index``, else ``image_token_id``)."""
    config = model.config
    value = getattr(config, "image_token_index", None)
    return value if value is not None else config.image_token_id


def cache_offset(cache) -> int:
    """Tokens already in the first KV cache (the largest row's, for batch caches)."""
    if not cache or cache[0] is None:
        return 0
    offset = cache[0].offset
    return int(offset.max().item()) if isinstance(offset, mx.array) else int(offset)


def record_packing(model, on_pack) -> None:
    """Wrap ``model.pack_image_features`` (OneVision's anyres packing) to report what it packed.

    Each call hands ``on_pack`` one boolean newline mask per packed image (which
    tokens are ``model.image_newline``), or ``None`` when the model has no
    newline parameter to read the packing by. Undo with ``del
    model.pack_image_features``.
    """
    original = model.pack_image_features

    def pack_image_features(image_features, image_sizes):
        packed = original(image_features, image_sizes)
        newline = model.image_newline
        on_pack(
            None
            if newline is None
            else [np.array(mx.all(image == newline[None].astype(image.dtype), axis=-1)) for image in packed]
        )
        return packed

    model.pack_image_features = pack_image_features


def pooled_side(model) -> int:
    """Gemma 3: tokens per side of each image's average-pooled grid (its projector's ``tokens_per_side``)."""
    return int(model.multi_modal_projector.tokens_per_side)


def tile_side(model) -> int:
    """Idefics3 / SmolVLM: tokens per side of one tile after the connector's pixel shuffle (row-major)."""
    vision = model.config.vision_config
    return (int(vision.image_size) // int(vision.patch_size)) // int(model.config.scale_factor)


def merge_ratio(model) -> int:
    """Mistral 3: pixels per merged token side (the vision ``patch_size`` times ``spatial_merge_size``)."""
    return int(model.config.vision_config.patch_size) * int(model.config.spatial_merge_size)


def swap_call(module, call):
    """Give one module instance its own ``__call__`` (special methods are looked up on the type).

    Returns the original class; assign it back to ``module.__class__`` to undo.
    """
    original = type(module)
    module.__class__ = type(f"TOPS{original.__name__}", (original,), {"__call__": call})
    return original


def language_signature(lm) -> inspect.Signature:
    """``LanguageModel.__call__``'s signature (without ``self``).

    The token ids are its first parameter (``inputs`` or ``input_ids``); the
    embeddings come as ``inputs_embeds`` — second in LLaVA / Qwen, fourth in
    LLaVA-OneVision.
    """
    return inspect.signature(type(lm).__call__.__get__(lm))


def language_inputs(bound: inspect.BoundArguments):
    """``(token ids, inputs_embeds)`` of a bound ``LanguageModel.__call__``."""
    first = next(iter(bound.signature.parameters))
    return bound.arguments.get(first), bound.arguments.get("inputs_embeds")


def set_language_inputs(bound: inspect.BoundArguments, ids) -> None:
    """Replace the token ids of a bound ``LanguageModel.__call__``."""
    bound.arguments[next(iter(bound.signature.parameters))] = ids


def clip_encoder_layers(model):
    """The CLIP encoder layers of a LLaVA / LLaVA-NeXT vision tower."""
    return model.vision_tower.vision_model.encoder.layers


# -- Stage II: decoder layers --------------------------------------------------------------


def decoder_layers(model) -> list:
    """The language model's decoder layers (``language_model.model.layers``; Idefics3: ``.layers``)."""
    lm = model.language_model
    inner = getattr(lm, "model", None)
    layers = getattr(inner, "layers", None) if inner is not None else None
    return layers if layers is not None else lm.layers


def layer_signature(layer) -> inspect.Signature:
    """A decoder layer's ``__call__`` signature: ``(x, mask, cache)`` (LLaMA, Qwen2, Pixtral).

    Call it before :func:`swap_call` replaces ``__call__``.
    """
    return inspect.signature(type(layer).__call__.__get__(layer))


def deepstack_layers(model) -> int:
    """Decoder layers that receive Qwen3-VL deepstack features (one per ``deepstack_visual_indexes``)."""
    return len(getattr(model.config.vision_config, "deepstack_visual_indexes", None) or ())


def cached_keys(cache, offset: int):
    """The rotated keys already in a layer's ``KVCache`` ``(B, H_kv, offset, d)`` (``None`` if empty).

    ``None`` for a rotating (sliding-window) cache: its buffer is circular.
    """
    if cache is None or offset == 0:
        return None
    if hasattr(cache, "max_size"):
        raise ValueError("rotating KV cache")
    return cache.keys[..., :offset, :]


def sliding_window(model, layer) -> int | None:
    """The attention window of a decoder layer (Gemma 3's sliding layers), ``None`` for full attention."""
    if not getattr(layer.self_attn, "is_sliding", False):
        return None
    return model.language_model.model.window_size


def layer_mask(hidden: mx.array, cache, window: int | None):
    """The mask mlx-vlm's Gemma 3 builds for a layer, for ``hidden`` and that layer's own cache."""
    from mlx_vlm.models.base import create_attention_mask

    return (
        create_attention_mask(hidden, cache, window_size=window)
        if window
        else create_attention_mask(hidden, cache)
    )


def rotated_query_key(attn, normed: mx.array, offset: int, position_ids=None):
    """Queries ``(B, H, L, d)`` and keys ``(B, H_kv, L, d)`` as the attention computes them.

    The layer's own ``q_proj``/``k_proj``, optional ``q_norm``/``k_norm`` and
    RoPE: ``rope`` at the cache ``offset`` (LLaMA / Qwen2 / Mistral attention of
    mlx-vlm; Mistral 3's Llama-4 query scaling is 1 below its
    ``original_max_position_embeddings`` and is not applied), or M-RoPE
    ``rotary_emb.apply_rotary`` at the layer's 3-D ``position_ids`` (Qwen2-VL,
    Qwen2.5-VL, Qwen3-VL; the same rotation as the ``position_embeddings`` path).
    """
    b, length, _ = normed.shape
    q = attn.q_proj(normed).reshape(b, length, attn.n_heads, -1)
    k = attn.k_proj(normed).reshape(b, length, attn.n_kv_heads, -1)
    if getattr(attn, "q_norm", None) is not None:
        q = attn.q_norm(q)
    if getattr(attn, "k_norm", None) is not None:
        k = attn.k_norm(k)
    q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
    if getattr(attn, "rotary_emb", None) is not None:
        if position_ids is None:  # as the attention does without explicit positions
            position_ids = mx.tile(mx.arange(offset, offset + length)[None, None], (3, 1, 1))
        return attn.rotary_emb.apply_rotary(q, k, position_ids, unsqueeze_dim=1)
    return attn.rope(q, offset=offset), attn.rope(k, offset=offset)


# -- batch_generate ---------------------------------------------------------------------------

_BATCH_SESSIONS: list = []
_BATCH_ORIGINAL = []


def install_batch_hook(session) -> None:
    """Route ``BatchGenerator.insert`` through ``session.batch_prompts`` while it is enabled.

    ``batch_generate`` tokenises the prompts, calls ``get_input_embeddings``
    (which prunes) and queues the *unpruned* token rows: every row would be
    padded to its unpruned length. The hook swaps in the pruned rows (and the
    pruned attention mask) recorded by the session for exactly those prompts.
    """
    from mlx_vlm.generate import ar

    if not _BATCH_SESSIONS:
        original = ar.BatchGenerator.insert

        @functools.wraps(original)
        def insert(generator, prompts, *args, **kwargs):
            for live in list(_BATCH_SESSIONS):
                replaced = live.batch_prompts(prompts, kwargs.get("attention_mask"))
                if replaced is not None:
                    prompts, mask = replaced
                    if "attention_mask" in kwargs:
                        kwargs["attention_mask"] = mask
                    break
            return original(generator, prompts, *args, **kwargs)

        _BATCH_ORIGINAL.append(original)
        ar.BatchGenerator.insert = insert
    _BATCH_SESSIONS.append(session)


def remove_batch_hook(session) -> None:
    """Undo :func:`install_batch_hook` for ``session`` (the class is restored with the last one)."""
    from mlx_vlm.generate import ar

    if session in _BATCH_SESSIONS:
        _BATCH_SESSIONS.remove(session)
    if not _BATCH_SESSIONS and _BATCH_ORIGINAL:
        ar.BatchGenerator.insert = _BATCH_ORIGINAL.pop()


# -- docs -------------------------------------------------------------------------------------

SUPPORT_MATRIX_PATH = "docs/assets/mlx_vlm_support.md"


def support_matrix() -> str:
    """The support matrix (Markdown) generated from :data:`FAMILIES` — the docs include it.

    Regenerate with ``python -m tops_adapters.mlx_vlm_compat`` (writes
    :data:`SUPPORT_MATRIX_PATH`); a test fails when the file is stale.
    """
    head = (
        "| model_type | family | Stage I | Stage II | batch_generate | positions | relevance (auto) "
        "| mlx-vlm | what it needed |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for f in FAMILIES.values():
        positions = "M-RoPE, gathered" if f.positions == "mrope" else "1-D, renumbered"
        relevance = "CLS attention" if f.cls else "instruction"
        since = f">= {f.min_version}" if f.min_version != TESTED_VERSIONS[0] else ", ".join(TESTED_VERSIONS)
        stage2 = "yes¹" if stage2_supported(f) else f"no: {stage2_reason(f)}"
        batch = (
            "no (upstream)"
            if f.batch_since is None
            else "yes"
            if f.batch_since == TESTED_VERSIONS[0]
            else f"yes (>= {f.batch_since})"
        )
        rows.append(
            f"| `{f.model_type}` | {f.label} | yes | {stage2} | {batch} | {positions} | {relevance} "
            f"| {since} | {f.notes} |"
        )
    notes = (
        "\n¹ With `generate` (one prompt). Under `batch_generate` mlx-vlm builds explicit mask "
        "arrays, and a Stage II schedule raises there; Stage I batches.\n"
    )
    return head + "\n".join(rows) + "\n" + notes


def stage2_supported(family: Family) -> bool:
    """Whether Stage II is built for ``family`` (see :func:`stage2_reason`)."""
    return stage2_reason(family) == ""


def stage2_reason(family: Family) -> str:
    """Why Stage II is not built for ``family`` (``""`` where it is: every family in the table)."""
    return ""


if __name__ == "__main__":
    with open(SUPPORT_MATRIX_PATH, "w", encoding="utf-8") as out:
        out.write(
            "<!-- generated by `python -m tops_adapters.mlx_vlm_compat` from FAMILIES; do not edit -->\n\n"
        )
        out.write(support_matrix())
