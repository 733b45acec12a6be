"""TOPS pruning inside mlx-vlm, the path Apple Silicon users run: Stage I, Stage II, batch_generate.

Stage I wraps ``Model.get_input_embeddings``: it returns the pruned
``inputs_embeds`` with every sequence-aligned field of mlx-vlm's
``InputEmbeddingsFeatures`` gathered (M-RoPE ``position_ids`` and recomputed
``rope_deltas``, Qwen3-VL's deepstack inputs, Gemma 3's 4-D mask), and the
language model is handed the pruned ``input_ids`` in step with the embeddings
(mlx-vlm's generation slices both alike)::

    from tops_adapters.mlx_vlm import enable
    with enable(model, keep=64):
        text = mlx_vlm.generate(model, processor, prompt, image)

Stage II (a :class:`~tops_adapters.hf.budget.Schedule` with ``stage2`` points)
wraps the scheduled decoder layers: text-rater attention scores the image
tokens and the later layers get the shorter sequence. ``batch_generate``
queues the pruned rows. What differs per family lives in the family table of
:mod:`tops_adapters.mlx_vlm_compat`, with every dependency on mlx-vlm internals.

Pruning runs after mlx-vlm's image-feature cache (``cached_image_features``):
the cache holds instruction-independent features, the selection is redone for
every prompt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

import tops_core
from tops_adapters import mlx_vlm_compat as compat
from tops_adapters.hf.budget import Budget, Schedule
from tops_adapters.layouts import (
    NO_LAYOUT_HINT,
    anyres_positions,
    anyres_shape,
    merged_grids,
    mixed,
    packed_rows,
    rows_of,
    sized_grids,
    square_grids,
)
from tops_core._validate import InvalidInputError, check_choice

__all__ = ["enable", "MLXPruning", "MLXStageRecord"]

_RELEVANCE = ("auto", "cls", "instruction", "uniform")


@dataclass
class MLXStageRecord:
    """What one pruning point of the last prefill did (NumPy copies, for inspection and tests).

    Attributes
    ----------
    visual_positions : (B, N) positions of the candidate image tokens in the
        sequence entering the stage (Stage II: in the layer's KV-cache coordinates).
    relevance : (B, N) the scores given to the selector.
    source : {"cls", "instruction", "uniform", "raters"} where the relevance came from.
    kept : (B, k) indices into the N candidates, ascending.
    columns : (B, L') columns of the entering sequence (Stage II: of the forward
        chunk) that survive.
    input_ids : (B, L') the pruned ``input_ids`` (Stage I only).
    rope_deltas : (B, 1) or None (M-RoPE families, Stage I).
    layer : ``0`` for Stage I, else the decoder layer pruned at.
    """

    visual_positions: np.ndarray
    relevance: np.ndarray
    source: str
    kept: np.ndarray
    columns: np.ndarray
    input_ids: np.ndarray
    rope_deltas: np.ndarray | None = None
    layer: int = 0


def cosine_similarity(features: mx.array) -> mx.array:
    """``(1 + cos) / 2`` of ``(N, d)`` features, float32 (as :func:`tops_core.cosine`)."""
    x = features.astype(mx.float32)
    norm = mx.linalg.norm(x, axis=-1, keepdims=True)
    unit = x / mx.where(norm == 0, 1.0, norm)
    cos = mx.clip(unit @ unit.T, -1.0, 1.0)
    return (1 + (cos + cos.T) / 2) / 2


def cls_attention(layer, hidden: mx.array) -> mx.array:
    """CLS -> token attention of an mlx-vlm CLIP encoder layer, mean over heads: ``(C, 1 + P)``."""
    attn = layer.self_attn
    normed = layer.layer_norm1(hidden)
    c, n, _ = normed.shape
    heads = attn.num_heads
    q = attn.q_proj(normed[:, :1]).reshape(c, 1, heads, -1).transpose(0, 2, 1, 3)
    k = attn.k_proj(normed).reshape(c, n, heads, -1).transpose(0, 2, 1, 3)
    logits = (q.astype(mx.float32) @ k.astype(mx.float32).transpose(0, 1, 3, 2)) * attn.scale
    return mx.softmax(logits, axis=-1).mean(axis=1)[:, 0]


def instruction_relevance(visual: mx.array, text: mx.array) -> mx.array:
    """Mean ``(1 + cos) / 2`` between each visual token ``(N, d)`` and the instruction tokens ``(T, d)``.

    The formula of :func:`tops_adapters.hf.scores.instruction_relevance`, in MLX;
    float32, in ``[0, 1]``, shape ``(N,)``.
    """
    v = visual.astype(mx.float32)
    t = text.astype(mx.float32)
    v = v / mx.maximum(mx.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    t = t / mx.maximum(mx.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    return ((1 + mx.clip(v @ t.T, -1.0, 1.0)) / 2).mean(axis=-1)


def rater_relevance(
    layer,
    hidden: mx.array,
    visual: np.ndarray,
    offset: int = 0,
    cache=None,
    position_ids=None,
    window: int | None = None,
) -> mx.array:
    """Mean attention of the text raters to each visual token at a decoder layer (Stage II).

    The semantics of :func:`tops_adapters.hf.scores.rater_relevance` with
    ``raters="all_mean"``: raters are the text tokens after the image (here: in
    this forward), each row's softmax runs over every key it may see (causal,
    including keys already in the layer's cache), heads are averaged and the
    raters weigh equally. Recomputed for the rater rows only with the layer's
    own projections and RoPE, so the layer itself keeps its fused attention.

    Parameters
    ----------
    layer : an mlx-vlm decoder layer (``input_layernorm``, ``self_attn``).
    hidden : (B, L, D) the layer's input.
    visual : (B, N) int, columns of the image tokens in ``hidden`` (ascending).
    offset : tokens already in the layer's KV cache.
    cache : the layer's KV cache (its keys join the softmax), or ``None``.
    position_ids : (3, B, L) the layer's M-RoPE positions (Qwen families), or ``None``.
    window : the layer's attention window (Gemma 3's sliding layers), or ``None``.

    Returns
    -------
    mx.array, shape (B, N), float32, non-negative
    """
    attn = layer.self_attn
    b, length, _ = hidden.shape
    start = int(visual[:, -1].min()) + 1  # first column after the image in every row
    is_visual = np.zeros((b, length), dtype=bool)
    np.put_along_axis(is_visual, visual, True, axis=1)
    weight = (~is_visual[:, start:]).astype(np.float32)
    if weight.sum(axis=1).min() == 0:
        raise InvalidInputError(
            f"Stage II needs text tokens after the image in the forward that holds it; got {length - start} "
            "columns after the image. Put the instruction after the image, or pass prefill_step_size=None "
            "(mlx-vlm otherwise runs the last prompt token alone)"
        )
    q, k = compat.rotated_query_key(attn, layer.input_layernorm(hidden), offset, position_ids)
    try:
        past = compat.cached_keys(cache, offset)
    except ValueError:
        raise InvalidInputError(
            f"Stage II at a sliding-window layer needs the image in the first prefill chunk; it starts "
            f"after {offset} cached tokens. Pass a larger prefill_step_size"
        ) from None
    if past is not None:
        k = mx.concatenate([past, k], axis=2)
    k = mx.repeat(k, attn.n_heads // attn.n_kv_heads, axis=1).astype(mx.float32)
    q = q[:, :, start:].astype(mx.float32)
    logits = (q @ k.transpose(0, 1, 3, 2)) * attn.scale  # (B, H, R, offset + L)
    rows = mx.arange(offset + start, offset + length)
    keys = mx.arange(offset + length)[None, :]
    allowed = keys <= rows[:, None]
    if window is not None:  # as the layer's own sliding-window mask
        allowed = allowed & (keys > rows[:, None] - window)
    logits = mx.where(allowed, logits, -mx.inf)
    probs = mx.softmax(logits, axis=-1).mean(axis=1)  # (B, R, offset + L)
    columns = mx.broadcast_to(mx.array(offset + visual)[:, None, :], (b, probs.shape[1], visual.shape[1]))
    to_visual = mx.take_along_axis(probs, columns, axis=2)
    w = mx.array(weight / weight.sum(axis=1, keepdims=True))
    return (to_visual * w[..., None]).sum(axis=1)


class MLXPruning:
    """TOPS pruning (Stage I, optionally Stage II) switched on in one mlx-vlm model.

    :meth:`disable` (or leaving the ``with`` block) restores the model.
    """

    def __init__(self, model, schedule: Schedule, *, objective=None, relevance="auto", spatial=True):
        family = compat.family_of(model)
        if family is None or not hasattr(model, "get_input_embeddings"):
            kind = getattr(getattr(model, "config", None), "model_type", None)
            raise InvalidInputError(
                f"model must be an mlx-vlm Model of a supported family (config.model_type in "
                f"{sorted(compat.FAMILIES)}); got {type(model).__name__} with model_type {kind!r}"
            )
        check_choice("relevance", relevance, _RELEVANCE)
        if relevance == "cls" and family.cls is None:
            raise InvalidInputError(
                f"relevance='cls' needs a vision encoder with a CLS token; {family.model_type} has none. "
                "Use 'instruction' or 'uniform'"
            )
        tops_core.api.resolve(objective)
        if schedule.stage2:
            if not compat.stage2_supported(family):
                raise InvalidInputError(
                    f"Stage II (schedule.stage2) is built for model_type in "
                    f"{[f for f, fam in compat.FAMILIES.items() if compat.stage2_supported(fam)]}; got "
                    f"{family.model_type} ({compat.stage2_reason(family)})"
                )
            schedule.check_depth(len(compat.decoder_layers(model)))
            injected = compat.deepstack_layers(model) if family.deepstack else 0
            if schedule.stage2[0][0] < injected:
                raise InvalidInputError(
                    f"stage2 layers must be >= {injected} for this {family.model_type}: its deepstack "
                    f"features are added to the image tokens at layers 0..{injected - 1}; got layer "
                    f"{schedule.stage2[0][0]}"
                )
        self.model, self.family, self.schedule = model, family, schedule
        self.budget = schedule.stage1 if schedule.stage1 is not None else Budget(ratio=1.0)
        self.kind = family.model_type
        self.objective = tops_core.TOPSRule() if objective is None else objective
        self.relevance = relevance
        self.spatial = bool(spatial)
        self.image_token_id = compat.image_token_id(model)
        self.history: list[MLXStageRecord] = []
        self._cls = None
        self._ids = None
        self._batch = None
        self._stage2 = None
        self._packing = None  # what pack_image_features packed in the running call (packed families)
        self._restore = []
        self.enabled = False
        self._enable()

    def _enable(self):
        if getattr(self.model, "_tops_pruning", None) is not None:
            raise InvalidInputError("TOPS pruning is already enabled on this model; disable it first")
        layer = self._cls_layer() if self.family.cls and self.relevance in ("auto", "cls") else None
        self.model._tops_pruning = self
        original = self.model.get_input_embeddings
        self.model.get_input_embeddings = self._wrap_embeddings(original)
        session = self
        if self.family.packed:
            compat.record_packing(self.model, lambda newlines: setattr(session, "_packing", newlines))

        lm = self.model.language_model
        signature = compat.language_signature(lm)  # argument order differs between families

        def language_call(lm, *args, **kwargs):
            ids = session._ids
            if ids is not None:
                bound = signature.bind(*args, **kwargs)
                inputs, embeds = compat.language_inputs(bound)
                if embeds is not None and inputs is not None:
                    offset = compat.cache_offset(bound.arguments.get("cache"))
                    compat.set_language_inputs(bound, ids[:, offset : offset + embeds.shape[1]])  # in step
                    args, kwargs = bound.args, bound.kwargs
            return super(type(lm), lm).__call__(*args, **kwargs)

        self._restore.append((lm, compat.swap_call(lm, language_call)))
        if layer is not None:

            def recording_call(module, x, *args, **kwargs):
                session._cls = cls_attention(module, x)
                return super(type(module), module).__call__(x, *args, **kwargs)

            self._restore.append((layer, compat.swap_call(layer, recording_call)))
        layers = compat.decoder_layers(self.model)
        budgets = dict(self.schedule.stage2)
        # M-RoPE: the model hands every layer the full prompt's positions; the layers after a
        # pruning point get the kept columns' positions instead
        # likewise the mask arrays (Gemma 3's sliding-window layers)
        every_later = self.family.positions == "mrope" or self.family.layer_masks
        wrapped = range(min(budgets), len(layers)) if budgets and every_later else sorted(budgets)
        for index in wrapped:
            call = self._stage2_call(index, budgets.get(index))
            self._restore.append((layers[index], compat.swap_call(layers[index], call)))
        compat.install_batch_hook(self)
        self.enabled = True

    def _cls_layer(self):
        layers = compat.clip_encoder_layers(self.model)
        chosen = self.model.vision_feature_layer
        chosen = chosen[-1] if isinstance(chosen, (list, tuple)) else chosen
        index = chosen % (len(layers) + 1)  # into hidden_states (0 = embeddings)
        if index == 0:
            raise InvalidInputError(
                f"relevance='cls' needs vision_feature_layer to name an encoder layer; got {chosen}"
            )
        return layers[index - 1]

    def disable(self) -> None:
        """Remove the wrappers: the model behaves exactly as before."""
        for wrapped in ("get_input_embeddings", "pack_image_features"):
            if wrapped in vars(self.model):
                delattr(self.model, wrapped)
        for module, cls in self._restore:
            module.__class__ = cls
        self._restore = []
        compat.remove_batch_hook(self)
        if getattr(self.model, "_tops_pruning", None) is self:
            del self.model._tops_pruning
        self._ids = None
        self._batch = None
        self._stage2 = None
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disable()
        return False

    def batch_prompts(self, prompts, attention_mask):
        """The pruned prompt rows for ``BatchGenerator.insert`` if ``prompts`` are the last pruned ones.

        Called by the ``batch_generate`` hook in :mod:`tops_adapters.mlx_vlm_compat`;
        returns ``(prompts, attention_mask)`` in the caller's types, or ``None``
        for prompts this session did not prune.
        """
        if self._batch is None:
            return None
        original, pruned, mask = self._batch
        given = prompts.tolist() if isinstance(prompts, mx.array) else [list(row) for row in prompts]
        if given != original:
            return None
        self._ids = None  # the generator now feeds the pruned rows itself
        rows = mx.array(pruned) if isinstance(prompts, mx.array) else pruned.tolist()
        if attention_mask is not None and mask is None:
            raise InvalidInputError(
                "batch_generate passed an attention_mask but get_input_embeddings got mask=None; "
                "the pruned mask cannot be derived"
            )
        return rows, (None if attention_mask is None else mx.array(mask).astype(attention_mask.dtype))

    def _wrap_embeddings(self, original):
        def get_input_embeddings(input_ids=None, pixel_values=None, **kwargs):
            self._cls = self._packing = None
            out = original(input_ids, pixel_values, **kwargs)
            self._stage2 = None
            if pixel_values is None or input_ids is None:
                self._ids = None
                self._batch = None
                return out
            return self._prune(input_ids, out, kwargs)

        return get_input_embeddings

    def _placeholder_repeats(self, ids, length):
        """Columns each ``input_ids`` column spans in ``inputs_embeds`` (LLaVA-NeXT expands each image).

        ``None`` when they are aligned one to one.
        """
        if ids.shape[1] == length:
            return None
        placeholders = (ids == self.image_token_id).sum(axis=1)
        uneven = (placeholders != placeholders[0]).any() or placeholders[0] == 0
        if not self.family.expands_placeholder or uneven:
            raise InvalidInputError(
                f"inputs_embeds must have one column per input_ids column for {self.kind}; "
                f"got input_ids {ids.shape} and inputs_embeds length {length}"
            )
        if ids.shape[0] != 1:
            raise InvalidInputError(
                f"{self.kind} in mlx-vlm merges one image per call; input_ids must have 1 row, "
                f"got {ids.shape[0]}"
            )
        per_image = (length - ids.shape[1]) // int(placeholders[0]) + 1
        return np.where(ids[0] == self.image_token_id, per_image, 1)

    def _prune(self, input_ids, out, kwargs):
        given = np.array(input_ids)
        embeds = out.inputs_embeds
        repeats = self._placeholder_repeats(given, embeds.shape[1])
        ids = given if repeats is None else np.repeat(given, repeats, axis=1)
        visual = ids == self.image_token_id
        counts = visual.sum(axis=1)
        if (counts != counts[0]).any():
            raise InvalidInputError(
                f"every row must hold the same number of image tokens; got counts {counts.tolist()}"
            )
        b, n = ids.shape[0], int(counts[0])
        if n == 0:
            self._ids = None
            self._batch = None
            return out
        mask = kwargs.get("mask")
        if mask is not None:
            mask = np.array(mask) if repeats is None else np.repeat(np.array(mask), repeats, axis=1)
        valid = np.ones(ids.shape, dtype=bool) if mask is None else mask.astype(bool)
        visual_pos = np.stack([np.nonzero(row)[0] for row in visual])
        feats = [embeds[row, mx.array(visual_pos[row])] for row in range(b)]
        relevance, source = self._relevance(feats, embeds, visual & valid, ~visual & valid)
        kept = self._kept(feats, relevance, n, kwargs)
        keep = ~visual
        for row in range(b):
            keep[row, visual_pos[row, kept[row]]] = True
        columns = np.stack([np.nonzero(row)[0] for row in keep])
        cols = mx.array(columns)
        changes = {"inputs_embeds": _gather_columns(embeds, cols)}
        new_ids = np.take_along_axis(ids, columns, axis=1)
        self._ids = mx.array(new_ids).astype(input_ids.dtype)
        self._batch = (
            given.tolist(),
            new_ids,
            None if mask is None else np.take_along_axis(mask, columns, axis=1),
        )
        deltas = self._gather_positions(out, cols, np.take_along_axis(valid, columns, axis=1), changes)
        for name in self.family.row_aligned:
            value = getattr(out, name, None)
            if value is not None:
                changes[name] = _gather_columns(value, cols)
        if self.family.square_mask and getattr(out, self.family.square_mask, None) is not None:
            square = getattr(out, self.family.square_mask)
            changes[self.family.square_mask] = mx.stack(
                [square[row][:, cols[row]][:, :, cols[row]] for row in range(b)]
            )
        if self.family.deepstack and getattr(out, "deepstack_visual_embeds", None) is not None:
            flat = mx.array((np.arange(b)[:, None] * n + kept).reshape(-1))
            changes["deepstack_visual_embeds"] = [layer[flat] for layer in out.deepstack_visual_embeds]
        self.history = [
            MLXStageRecord(
                visual_pos, np.stack([np.array(r) for r in relevance]), source, kept, columns, new_ids, deltas
            )
        ]
        if self.schedule.stage2:  # where the kept image tokens sit in the pruned prompt
            self._stage2 = {
                "visual": np.stack(
                    [np.nonzero(np.isin(columns[row], visual_pos[row]))[0] for row in range(b)]
                ),
                "done": set(),
            }
        return dataclasses.replace(out, **changes)

    def _kept(self, feats, relevance, n: int, kwargs) -> np.ndarray:
        """Kept image-token indices per row ``(B, k)``: ``select`` on each row's features."""
        k = self.budget.tokens(n)
        if k >= n:
            return np.tile(np.arange(n), (len(feats), 1))
        layouts = self._stage1_layouts(len(feats), n, kwargs)
        kept = []
        for row, rows_feats in enumerate(feats):
            sim = self._similarity(rows_feats, None if layouts is None else layouts[row])
            sel = tops_core.select(relevance[row], sim, k, objective=self.objective)
            kept.append(np.array(sel.indices).astype(np.int64))
        return np.stack(kept)

    def _gather_positions(self, out, cols, kept_valid: np.ndarray, changes: dict):
        """The kept columns' positions into ``changes``; the M-RoPE deltas (or ``None``) returned."""
        if getattr(out, "position_ids", None) is None:
            return None
        pos = out.position_ids
        gathered = mx.stack([pos[..., row, :][..., cols[row]] for row in range(cols.shape[0])], axis=-2)
        changes["position_ids"] = gathered
        if self.family.positions != "mrope":
            return None
        spatial = np.array(gathered if gathered.ndim == 3 else gathered[None])
        # as mlx-vlm's get_rope_index: max + 1 - the row's unpadded length
        deltas = (spatial.max(axis=(0, 2)) + 1 - kept_valid.sum(axis=1)).reshape(-1, 1)
        changes["rope_deltas"] = mx.array(deltas)
        return deltas

    def _stage2_call(self, index, budget):
        session = self
        signature = compat.layer_signature(compat.decoder_layers(self.model)[index])
        names = list(signature.parameters)
        window = compat.sliding_window(self.model, compat.decoder_layers(self.model)[index])

        def call(layer, *args, **kwargs):
            state = session._stage2
            if state is None:
                return super(type(layer), layer).__call__(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            hidden, cache = bound.arguments[names[0]], bound.arguments.get("cache")
            positions = bound.arguments.get("position_ids")
            if (
                state.get("position_ids") is not None
                and positions is not None
                and positions.shape[-1] != hidden.shape[1]
            ):  # this forward was pruned upstream
                positions = session._use_positions(bound, state["position_ids"])
                args, kwargs = bound.args, bound.kwargs
            if (
                session.family.layer_masks
                and isinstance(bound.arguments.get("mask"), mx.array)
                and bound.arguments["mask"].shape[-2] != hidden.shape[1]
            ):  # pruned upstream
                bound.arguments["mask"] = compat.layer_mask(hidden, bound.arguments.get("cache"), window)
                args, kwargs = bound.args, bound.kwargs
            if budget is None or index in state["done"]:
                return super(type(layer), layer).__call__(*args, **kwargs)
            mask = bound.arguments.get("mask")
            offset = cache.offset if cache is not None else 0
            if not isinstance(offset, int):
                raise InvalidInputError(
                    f"Stage II needs one prompt per forward (generate); layer {index} got a batch KV cache "
                    f"({type(cache).__name__}, one offset per row: batch_generate). Use Stage I only"
                )
            columns = state["visual"] - offset
            inside = (columns >= 0) & (columns < hidden.shape[1])
            if inside.any():
                if not inside.all():
                    raise InvalidInputError(
                        f"Stage II at layer {index} needs every image token in one prefill chunk; this chunk "
                        f"holds {int(inside[0].sum())} of {columns.shape[1]}. Pass a larger prefill_step_size"
                    )
                if isinstance(mask, mx.array) and not session.family.layer_masks:
                    raise InvalidInputError(
                        f"Stage II needs the causal mask mlx-vlm builds for one prompt; got an explicit mask "
                        f"array of shape {mask.shape} (batch_generate or a sliding window). Use Stage I only"
                    )
                pruned, kept_columns = session._stage2_prune(
                    layer, index, budget, hidden, columns, offset, cache, positions, window
                )
                bound.arguments[names[0]] = pruned
                if session.family.layer_masks:
                    bound.arguments["mask"] = compat.layer_mask(pruned, cache, window)
                if positions is not None:
                    state["position_ids"] = mx.stack(
                        [positions[:, row, mx.array(kept_columns[row])] for row in range(pruned.shape[0])],
                        axis=1,
                    )
                    session._use_positions(bound, state["position_ids"])
                state["done"].add(index)
                args, kwargs = bound.args, bound.kwargs
            return super(type(layer), layer).__call__(*args, **kwargs)

        return call

    @staticmethod
    def _use_positions(bound, positions):
        """Hand a layer the pruned sequence's M-RoPE positions (its cos/sin then follow from them)."""
        bound.arguments["position_ids"] = positions
        if "position_embeddings" in bound.arguments:
            bound.arguments["position_embeddings"] = None
        return positions

    def _stage2_prune(self, layer, index, budget, hidden, visual, offset, cache, positions=None, window=None):
        b, length, _ = hidden.shape
        n = visual.shape[1]
        k = budget.tokens(n)
        relevance = rater_relevance(layer, hidden, visual, offset, cache, positions, window)
        kept = []
        for row in range(b):
            if k >= n:
                kept.append(np.arange(n))
                continue
            feats = hidden[row, mx.array(visual[row])]
            sel = tops_core.select(relevance[row], cosine_similarity(feats), k, objective=self.objective)
            kept.append(np.array(sel.indices).astype(np.int64))
        kept = np.stack(kept)
        keep = np.ones((b, length), dtype=bool)
        np.put_along_axis(keep, visual, False, axis=1)
        np.put_along_axis(keep, np.take_along_axis(visual, kept, axis=1), True, axis=1)
        columns = np.stack([np.nonzero(row)[0] for row in keep])
        kept_columns = np.take_along_axis(visual, kept, axis=1)
        self._stage2["visual"] = offset + np.stack(
            [np.nonzero(np.isin(columns[row], kept_columns[row]))[0] for row in range(b)]
        )
        self.history.append(
            MLXStageRecord(visual + offset, np.array(relevance), "raters", kept, columns, None, layer=index)
        )
        return _gather_columns(hidden, mx.array(columns)), columns

    def _stage1_layouts(self, b, n, kwargs):
        """Each row's token layout for :func:`tops_core.spatial` at Stage I, or ``None`` (plain cosine).

        As the transformers integration (:mod:`tops_adapters.layouts`): only for an
        ``Objective`` (what the study behind the default measured), on LLaVA's square patch
        grids, Gemma 3's pooled square grids, Idefics3's and SmolVLM's pixel-shuffled tiles (a
        square grid each), the M-RoPE families' and Mistral 3's merged grids
        (``image_grid_thw``, ``image_sizes``) and LLaVA-OneVision's anyres packing; mlx-vlm's
        LLaVA-NeXT stays plain (it does not pack its crops on the image). Where the layout is
        known but the images do not fit it, this raises.
        """
        if not (self.spatial and isinstance(self.objective, tops_core.Objective)):
            return None
        vision = self.model.config.vision_config
        if self.kind == "llava":
            full = getattr(self.model.config, "vision_feature_select_strategy", "default") == "full"
            return [square_grids(vision.image_size // vision.patch_size, n, self.family.label, cls=full)] * b
        if self.kind == "gemma3":  # the projector average-pools each image to a square grid
            return [square_grids(compat.pooled_side(self.model), n, self.family.label)] * b
        if self.kind in ("idefics3", "smolvlm"):  # a square grid per tile, tiles unrelated
            return [square_grids(compat.tile_side(self.model), n, self.family.label)] * b
        if self.kind == "mistral3":
            sizes = kwargs.get("image_sizes")
            if sizes is None:
                raise InvalidInputError(
                    f"spatial=True on {self.family.label} lays the tokens out on image_sizes; got "
                    f"get_input_embeddings without them. {NO_LAYOUT_HINT}"
                )
            ratio = compat.merge_ratio(self.model)
            return rows_of(sized_grids(np.array(sizes).tolist(), ratio), b, n, source="image_sizes")
        if self.family.packed:
            return self._packed_layouts(b, n)
        if self.family.positions != "mrope":
            return None
        grid_thw = kwargs.get("image_grid_thw")
        if grid_thw is None:
            raise InvalidInputError(
                f"spatial=True on {self.family.label} lays the tokens out on image_grid_thw; got "
                f"get_input_embeddings without it. {NO_LAYOUT_HINT}"
            )
        return rows_of(merged_grids(np.array(grid_thw).tolist(), vision.spatial_merge_size), b, n)

    def _packed_layouts(self, b, n):
        """LLaVA-OneVision: each row's images placed by the model's own anyres packing."""
        if self._packing is None:
            why = (
                "got a model without image_newline tokens to read it by"
                if self.model.image_newline is None
                else "got get_input_embeddings without it (cached image features?)"
            )
            raise InvalidInputError(
                f"spatial=True on {self.family.label} lays the tokens out by the model's anyres packing "
                f"(pack_image_features); {why}. {NO_LAYOUT_HINT}"
            )
        vision = self.model.config.vision_config
        side = vision.image_size // vision.patch_size
        base = side * side
        images = [
            anyres_positions(side, base, *anyres_shape(newline, base, "pack_image_features"))
            for newline in self._packing
        ]
        return packed_rows(images, b, n)

    @staticmethod
    def _similarity(feats, layout=None):
        """Stage I's cosine similarity of one row's tokens, position-aware on ``layout`` if given."""
        sim = cosine_similarity(feats)
        return sim if layout is None else mixed(sim, layout)

    def _relevance(self, feats, embeds, visual, text):
        b = len(feats)
        mode = self.relevance
        if mode == "auto":
            mode = "cls" if self._cls is not None else "instruction"
        if mode == "cls":
            if self._cls is None:
                raise InvalidInputError(
                    "relevance='cls' needs the vision tower to run in this call; got cached image "
                    "features. Use relevance='auto' or 'instruction'"
                )
            rows = self._cls
            if self.model.vision_feature_select_strategy == "default":
                rows = rows[:, 1:]
            n = feats[0].shape[0]
            if self.family.cls == "first_crop":
                if b != 1 or rows.shape[1] != n:
                    raise InvalidInputError(
                        f"relevance='cls' for {self.kind} maps the base crop's CLS row onto one image; "
                        f"got {b} prompts and {rows.shape[1]} patches per crop for {n} image tokens. "
                        "Use relevance='instruction'"
                    )
                return [rows[0]], "cls"
            flat = rows.reshape(-1)
            return [flat[row * n : (row + 1) * n] for row in range(b)], "cls"
        if mode == "uniform":
            return [mx.ones((f.shape[0],)) for f in feats], "uniform"
        out = []
        for row in range(b):
            text_columns = np.nonzero(text[row])[0]
            if text_columns.size == 0:
                raise InvalidInputError(
                    f"instruction relevance needs text tokens besides the image; prompt row {row} has "
                    "none. Use relevance='uniform' explicitly"
                )
            out.append(instruction_relevance(feats[row], embeds[row, mx.array(text_columns)]))
        return out, "instruction"


def _gather_columns(value: mx.array, cols: mx.array) -> mx.array:
    """Rows of ``value`` (B, L, ...) at ``cols`` (B, L'), per batch row."""
    return mx.stack([value[row, cols[row]] for row in range(cols.shape[0])])


def enable(
    model, schedule=None, *, keep=None, ratio=None, objective=None, relevance="auto", spatial=True
) -> MLXPruning:
    """Turn TOPS pruning on in an mlx-vlm ``Model``.

    Parameters
    ----------
    model : mlx_vlm ``Model``
        A supported family (``config.model_type``; see
        :data:`tops_adapters.mlx_vlm_compat.FAMILIES` and the support matrix).
    schedule : tops_adapters.hf.budget.Schedule, optional
        Stage I budget and Stage II points, e.g. ``Schedule(stage1=64,
        stage2=((12, 32), (24, 16)))``. Shortcuts: ``keep=`` tokens or
        ``ratio=`` give a Stage-I-only schedule. Exactly one of the three.
    keep, ratio : int or float
        Stage I budget: visual tokens to keep, or the fraction of N.
    objective : tops_core.Objective or rule, optional
        Default ``tops_core.TOPSRule()`` (the paper); ``tops_core.Objective()``
        for the certified objective.
    relevance : {"auto", "cls", "instruction", "uniform"}
        Stage I scores. ``auto``: CLS attention of the chosen ViT layer where
        the encoder has a CLS token (LLaVA, LLaVA-NeXT) and the vision tower
        runs in the call; the instruction (mean ``(1 + cos) / 2`` between each
        image token and the prompt's text tokens, padding excluded) otherwise —
        SigLIP, Pixtral and Qwen towers have no CLS token, and features from
        mlx-vlm's vision cache carry none. ``history[0].source`` says which.
        ``uniform`` only when asked for.
    spatial : bool, default True
        Position-aware similarity (:func:`tops_core.spatial` with its defaults) at Stage I with
        a ``tops_core.Objective``, on LLaVA's square patch grids and the merged grids
        (``image_grid_thw``) of Qwen2-VL, Qwen2.5-VL and Qwen3-VL; the rules, the other families
        and Stage II keep the plain cosine. Where the layout is known but the images do not fit
        it, pruning raises rather than falling back. ``False`` turns it off.

    Returns
    -------
    MLXPruning
        A context manager; ``disable()`` restores the model. ``history`` holds
        the last prefill's :class:`MLXStageRecord` s (Stage I, then Stage II).

    Notes
    -----
    Positions: families whose RoPE is placed by the KV-cache offset renumber
    the kept tokens contiguously (the paper's policy; in Stage II each layer's
    own cache offset continues from its pruned length); M-RoPE families keep
    the 3-D positions computed on the full prompt, and ``rope_deltas`` is
    recomputed so decoding continues at ``max + 1``. Stage II scores the image
    tokens by the attention of the text after the image in the forward that
    holds it: with mlx-vlm's default chunked prefill the last prompt token runs
    alone and is not a rater (``prefill_step_size=None`` makes it one).
    """
    given = [
        name
        for name, value in (("schedule", schedule), ("keep", keep), ("ratio", ratio))
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(
            f"enable needs exactly one of schedule, keep= or ratio=; got {given or 'none'}"
        )
    if schedule is None:
        schedule = Schedule(stage1=Budget(keep=keep, ratio=ratio))
    elif not isinstance(schedule, Schedule):
        raise InvalidInputError(f"schedule must be a Schedule; got {type(schedule).__name__}")
    return MLXPruning(model, schedule, objective=objective, relevance=relevance, spatial=spatial)
