"""The pruning session: patches on one loaded model, Stage I and Stage II, decode bookkeeping.

Everything is an instance-level patch (``module.forward`` attributes and
hooks) that :meth:`Pruning.disable` removes, so turning pruning off restores
the model exactly. ``generate()`` keeps its own full-length ``input_ids``,
``attention_mask``, ``position_ids`` and ``mm_token_type_ids``; the session
maps them onto the pruned sequence at the language model's boundary.
"""

from __future__ import annotations

import functools
import inspect
import math

import torch

import tops_core
from tops_core._validate import InvalidInputError, check_choice

from ..layouts import (
    NO_LAYOUT_HINT,
    anyres_positions,
    merged_grids,
    mixed,
    packed_rows,
    rows_of,
    sized_grids,
    square_grids,
)
from .budget import Schedule, split_budget
from .compat import DEEPSTACK_ARGUMENTS, encoded_images, find_cache, mask_mapping, output_cache
from .families import (
    check_stage2_layers,
    cls_layer,
    family_of,
    merge_cls,
    next_layout,
    packed_images,
    tile_side,
)
from .scores import RATERS, cls_attention, cosine_similarity, instruction_relevance
from .sequence import PrunedSequence, StageRecord, encoded_rows, kept_columns, per_row, renumber
from .stage2 import Stage2Mixin

__all__ = ["Pruning", "StageRecord"]

# The attribute under which a KV cache carries the pruned sequence it holds: decode steps find
# their bookkeeping on the cache they continue, whatever transformers calls its argument.
_SEQUENCE = "_tops_pruned_sequence"

_RELEVANCE = ("auto", "cls", "instruction", "uniform")
_POSITIONS = ("auto", "contiguous", "original")
_CROPS = ("joint", "crop")
_NEWLINES = ("keep", "select")


class Pruning(Stage2Mixin):
    """TOPS pruning switched on in one loaded Hugging Face model.

    Create it with :func:`tops_adapters.transformers.enable` (or use it as a
    context manager); :meth:`disable` removes every patch.
    """

    def __init__(
        self,
        model,
        schedule: Schedule,
        *,
        objective=None,
        relevance="auto",
        positions="auto",
        raters="all_mean",
        crops="joint",
        newlines="keep",
        spatial=True,
    ):
        self.family, self.inner = family_of(model)
        if not isinstance(schedule, Schedule):
            raise InvalidInputError(
                f"schedule must be a tops_adapters.transformers.Schedule; got {type(schedule).__name__}"
            )
        check_choice("relevance", relevance, _RELEVANCE)
        check_choice("positions", positions, _POSITIONS)
        check_choice("raters", raters, RATERS)
        check_choice("crops", crops, _CROPS)
        check_choice("newlines", newlines, _NEWLINES)
        if not self.family.anyres and (crops, newlines) != ("joint", "keep"):
            raise InvalidInputError(
                "crops= and newlines= lay out LLaVA-NeXT's packed anyres crops; "
                f"{self.family.label} ({self.family.name}) has no such layout (its crops and newline tokens "
                f"are ordinary candidates); got crops={crops!r}, newlines={newlines!r}"
            )
        tops_core.api.resolve(objective)  # validates the objective now, not at the first prefill
        if relevance == "auto":
            relevance = "cls" if self.family.has_cls else "instruction"
        if relevance == "cls" and not self.family.has_cls:
            raise InvalidInputError(
                f"relevance='cls' needs a vision encoder with a CLS token; {self.family.name} has none. "
                "Use 'instruction' or 'uniform'"
            )
        if positions == "auto":  # the paper's renumbering where RoPE allows it
            positions = "original" if self.family.mrope else "contiguous"
        if self.family.mrope and positions != "original":
            raise InvalidInputError(
                f"{self.family.name} uses 3-D M-RoPE positions computed on the full sequence; they are "
                f"kept (gathered), so positions must be 'original'; got positions={positions!r}"
            )
        self.model = model
        self.lm = getattr(self.inner, self.family.language_model)
        self.schedule = schedule
        schedule.check_depth(len(self.lm.layers))
        check_stage2_layers(self.family, self.inner.config, [layer for layer, _ in schedule.stage2])
        self.objective = tops_core.TOPSRule() if objective is None else objective
        self.relevance, self.positions, self.raters = relevance, positions, raters
        self.crops, self.newlines = crops, newlines
        self.spatial = bool(spatial)
        self.image_token_id = self.inner.config.image_token_id
        self.history: list[StageRecord] = []
        self._pending = None
        self._cls_rows: list[torch.Tensor] = []
        self._active: PrunedSequence | None = None  # the sequence of the forward running now
        self._last: PrunedSequence | None = None  # the last pruned prompt
        self._hooks = []
        self._patched = []
        self._methods = []
        self._encoded = None
        self._packing: list[dict] | None = None  # pack_image_features calls of the encoding running now
        self._wrapper_mask = None  # the 2-D mask the multimodal module received (wrapper_mask families)
        self.enabled = False
        self._enable()

    # ------------------------------------------------------------------ patches
    def _patch(self, module, wrapper):
        original = module.forward
        module.forward = wrapper(original)
        self._patched.append(module)

    def _patch_method(self, module, name, wrapper):
        original = getattr(module, name)
        setattr(module, name, wrapper(original))
        self._methods.append((module, name))

    def _enable(self):
        if getattr(self.inner, "_tops_pruning", None) is not None:
            raise InvalidInputError(
                "TOPS pruning is already enabled on this model; disable the active session first"
            )
        layer = cls_layer(self.inner) if self.relevance == "cls" else None  # may raise: before patching
        self.inner._tops_pruning = self
        self._patch(self.inner, self._wrap_inner)
        self._patch_method(self.inner, "get_image_features", self._wrap_image_features)
        if self.family.packed:
            self._patch_method(self.inner, "pack_image_features", self._wrap_pack)
        self._patch(self.lm, self._wrap_lm)
        if layer is not None:
            self._hooks.append(layer.register_forward_pre_hook(self._capture_cls, with_kwargs=True))
        if self.schedule.stage2:
            first = self.schedule.stage2[0][0]
            for index in range(first, len(self.lm.layers)):
                self._patch(self.lm.layers[index], lambda orig, i=index: self._wrap_layer(orig, i))
        self.enabled = True

    def disable(self) -> None:
        """Remove every patch and hook: the model behaves exactly as before."""
        for module in self._patched:
            del module.forward
        for module, name in self._methods:
            delattr(module, name)
        for hook in self._hooks:
            hook.remove()
        if getattr(self.inner, "_tops_pruning", None) is self:
            del self.inner._tops_pruning
        self._patched, self._methods, self._hooks = [], [], []
        self._active = self._last = self._pending = self._encoded = self._wrapper_mask = None
        if self.family.mrope:
            self.inner.rope_deltas = None
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disable()
        return False

    # ------------------------------------------------------------------ capture
    def _capture_cls(self, layer, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        with torch.no_grad():
            self._cls_rows.append(cls_attention(layer, hidden))

    def _wrap_image_features(self, original):
        # generate() encodes images before the prefill and drops pixel_values / image_sizes from
        # the forward's arguments, so what Stage I needs is recorded here, at encoding time.
        signature = inspect.signature(original)

        @functools.wraps(original)
        def get_image_features(*args, **kwargs):
            self._cls_rows, self._packing = [], []
            try:
                out = original(*args, **kwargs)
            finally:
                packing, self._packing = self._packing, None
            bound = signature.bind_partial(*args, **kwargs).arguments
            strategy = bound.get("vision_feature_select_strategy") or getattr(
                self.inner.config, "vision_feature_select_strategy", "default"
            )
            self._encoded = {
                "cls": torch.cat(self._cls_rows) if self._cls_rows else None,
                "image_sizes": bound.get("image_sizes"),
                "strategy": strategy,
                "rows": encoded_rows(out),
                "grid_thw": bound.get("image_grid_thw"),
                "packing": packing[-1] if packing else None,
            }
            self._cls_rows = []
            return out

        return get_image_features

    def _wrap_pack(self, original):
        # the anyres packing the encoding running now asks for: its layout, re-packed on maps later
        signature = inspect.signature(original)

        @functools.wraps(original)
        def pack_image_features(*args, **kwargs):
            if self._packing is not None:
                bound = signature.bind(*args, **kwargs).arguments
                features = bound.pop("image_features")
                bound.pop("image_newline", None)
                self._packing.append(
                    {
                        "pack": original,
                        "counts": [int(f.shape[0]) for f in features],
                        "per_crop": int(features[0].shape[1]),
                        "arguments": bound,
                    }
                )
            return original(*args, **kwargs)

        return pack_image_features

    def _wrap_inner(self, original):
        @functools.wraps(original)
        def forward(*args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            has_image, image = encoded_images(kwargs)
            self._pending = None
            if self.family.wrapper_mask:  # the language model gets a mask mapping; keep what it is built from
                self._wrapper_mask = {
                    "attention_mask": kwargs.get("attention_mask"),
                    "token_type_ids": kwargs.get("token_type_ids"),
                }
            if not has_image:
                self._refuse_prompt_without_images(ids, args, kwargs)
                return original(*args, **kwargs)
            if ids is None:
                raise InvalidInputError(
                    "TOPS pruning finds the image tokens by input_ids; got inputs_embeds without input_ids"
                )
            rows = encoded_rows(image) if image is not None else None
            if rows is not None and self._encoded is not None and rows < self._encoded["rows"]:
                raise InvalidInputError(
                    "TOPS pruning needs every image token of the prompt in one forward; got "
                    f"{rows} of the {self._encoded['rows']} encoded image features "
                    "(chunked prefill, prefill_chunk_size, is not supported)"
                )
            self._pending = {"input_ids": ids}
            return original(*args, **kwargs)

        return forward

    def _refuse_prompt_without_images(self, ids, args, kwargs):
        """Raise if a prefill holds image tokens but no image to encode (nothing could be pruned).

        Some transformers releases (5.20-5.22) drop the images from a chunked
        prefill (``prefill_chunk_size``); the model would then read the image
        tokens as text.
        """
        cache = find_cache(args, kwargs)
        if ids is None or (cache is not None and cache.get_seq_length() > 0):
            return
        count = int((ids == self.image_token_id).sum())
        if count:
            raise InvalidInputError(
                f"TOPS pruning needs the images of a prompt's {count} image tokens in its prefill; got "
                "input_ids without pixel_values or encoded images (chunked prefill, prefill_chunk_size, "
                "is not supported)"
            )

    # ------------------------------------------------------------------ LM boundary
    def _wrap_lm(self, original):
        @functools.wraps(original)
        def forward(*args, **kwargs):
            cache = find_cache(args, kwargs)
            past = cache.get_seq_length() if cache is not None else 0
            pending, self._pending = self._pending, None
            wrapper, self._wrapper_mask = self._wrapper_mask, None
            if pending is not None and kwargs.get("inputs_embeds") is not None:
                if past > 0:
                    raise InvalidInputError(
                        "TOPS pruning prunes a prompt's image tokens in its prefill (an empty KV cache); got "
                        f"images in a forward that continues a KV cache of {past} tokens (images in a later "
                        "turn on the same cache are not supported)"
                    )
                with torch.no_grad():
                    kwargs, seq = self._stage1(pending, kwargs, wrapper, cache)
                out = self._run(original, seq, args, kwargs)
                seq.prefilling = False
                kept = cache if cache is not None else output_cache(out)
                if kept is not None:  # the decode steps find their pruned sequence on their cache
                    setattr(kept, _SEQUENCE, seq)
                self._last = seq
                return out
            seq = getattr(cache, _SEQUENCE, None)
            if seq is not None and past > 0:
                if seq.session is not self:
                    raise InvalidInputError(
                        "this KV cache holds a prompt pruned by another TOPS pruning session (since "
                        "disabled); decode it with that session enabled, or prefill again"
                    )
                kwargs = self._decode_inputs(seq, kwargs, past, wrapper, cache)
                seq.step = {}
                return self._run(original, seq, args, kwargs)
            if seq is not None:  # the cache was emptied (reset or reused): nothing pruned is left in it
                delattr(cache, _SEQUENCE)
            self._refuse_lost_sequence(cache, kwargs, past, wrapper)
            return original(*args, **kwargs)  # a sequence this session never pruned

        return forward

    def _run(self, original, seq, args, kwargs):
        """The language model's forward with ``seq`` live for the decoder-layer patches."""
        self._active = seq
        try:
            return original(*args, **kwargs)
        finally:
            self._active = None
            seq.override = {}

    def _refuse_lost_sequence(self, cache, kwargs, past, wrapper):
        """Raise if a call looks like a decode step of the last pruned prompt on a cache without it.

        ``generate()`` keeps the attention mask in the full prompt's
        coordinates, so such a mask is wider than its KV cache by the tokens
        pruning removed; the plain model cannot run it, and running it on a
        cache that lost the pruned sequence would decode at wrong positions.
        """
        last = self._last
        mask = self._two_d_mask(kwargs, wrapper, required=False)
        if last is None or past == 0 or not isinstance(mask, torch.Tensor) or mask.ndim != 2:
            return
        removed = last.full_len - last.pruned_len
        embeds = kwargs.get("inputs_embeds")
        q = embeds.shape[1] if embeds is not None else kwargs["input_ids"].shape[1]
        if removed > 0 and mask.shape[1] == past + removed + q:
            raise InvalidInputError(
                f"this call decodes the pruned prompt (its attention_mask has shape {tuple(mask.shape)}: the "
                f"full {last.full_len}-token prompt) but its KV cache ({type(cache).__name__}, "
                f"{past} tokens) does not carry the pruned sequence; pass the cache the pruned prefill "
                "filled (a copy.deepcopy of it works)"
            )

    def _two_d_mask(self, kwargs, wrapper, required=True):
        """The (batch, sequence) attention mask of a language-model call.

        Gemma 3's multimodal module hands the language model a mask mapping
        (full / sliding layers); its 2-D source mask was kept at the module.
        """
        mask = kwargs.get("attention_mask")
        if not (self.family.wrapper_mask and isinstance(mask, dict)):
            return mask
        if wrapper is None:
            if not required:
                return None
            raise InvalidInputError(
                f"{self.family.label} pruning rebuilds the per-layer masks from the 2-D attention_mask the "
                "multimodal module receives; got a language-model call with a mask mapping (dict) and no "
                "such mask (call the model itself, not its language model)"
            )
        return wrapper["attention_mask"]

    def _stage1(self, pending, kwargs, wrapper=None, cache=None):
        embeds = kwargs["inputs_embeds"]
        b, length, dim = embeds.shape
        dev = embeds.device
        ids = pending["input_ids"].to(dev)
        mask = self._two_d_mask(kwargs, wrapper)
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.ndim != 2):
            raise InvalidInputError(
                "TOPS pruning needs a 2-D attention_mask (batch, sequence) or None; got "
                f"{type(mask).__name__}"
                + (f" with shape {tuple(mask.shape)}" if hasattr(mask, "shape") else "")
            )
        valid = mask.bool() if mask is not None else torch.ones(b, length, dtype=torch.bool, device=dev)
        visual = ids == self.image_token_id
        counts = visual.sum(dim=1)
        if bool((counts != counts[0]).any()):
            raise InvalidInputError(
                "every row of the batch must hold the same number of image tokens (the budget is "
                f"per sequence); got counts {counts.tolist()}"
            )
        n = int(counts[0])
        visual_pos = visual.nonzero()[:, 1].view(b, n)
        feats = embeds.gather(1, visual_pos[..., None].expand(-1, -1, dim))
        rel, crop, newline = self._stage1_relevance(pending, feats, embeds, visual, valid, b, n)
        candidates = ~newline if (newline is not None and self.newlines == "keep") else None
        pool = n if candidates is None else int(candidates[0].sum())
        k = self.schedule.stage1.tokens(pool) if self.schedule.stage1 is not None else pool
        kept, selection = self._choose(
            rel,
            feats,
            k,
            crop if self.crops == "crop" else None,
            candidates,
            layouts=self._stage1_layouts(b, n),
        )
        columns = kept_columns(visual, visual_pos, kept)
        self.history = [StageRecord(0, visual_pos, rel, kept, columns, selection)]
        new_len = columns.shape[1]
        kwargs = dict(kwargs)
        kwargs["inputs_embeds"] = embeds.gather(1, columns[..., None].expand(-1, -1, dim))
        # an explicit all-ones mask keeps gathered positions from reading as packed sequences
        kwargs["attention_mask"] = (
            mask.gather(1, columns)
            if mask is not None
            else torch.ones(b, new_len, dtype=torch.long, device=dev)
        )
        kwargs["position_ids"] = self._stage1_positions(
            kwargs.get("position_ids"), columns, b, length, kwargs["attention_mask"], dev
        )
        new_visual = visual.gather(1, columns)
        seq = PrunedSequence(
            full_len=length,
            pruned_len=new_len,
            columns=columns,
            valid=kwargs["attention_mask"].bool(),
            visual_pos=new_visual.nonzero()[:, 1].view(b, -1),
            session=self,
        )
        if self.family.deepstack:
            self._gather_deepstack(kwargs, columns, kept, visual, b, n)
        if self.family.wrapper_mask and wrapper is not None:
            types = wrapper["token_type_ids"]
            kwargs["attention_mask"] = mask_mapping(
                self.inner,
                kwargs["inputs_embeds"],
                kwargs["attention_mask"],
                cache,
                kwargs["position_ids"],
                types.to(dev).gather(1, columns) if types is not None else None,
            )
        if self.family.mrope:
            self._store_rope_deltas(kwargs["position_ids"], kwargs["attention_mask"].bool())
        return kwargs, seq

    def _gather_deepstack(self, kwargs, columns, kept, visual, b, n):
        """Qwen3-VL: keep the deepstack features and visual mask of the kept image tokens only."""
        where, features = (kwargs.get(name) for name in DEEPSTACK_ARGUMENTS)
        if where is None:
            return
        if not torch.equal(where.to(visual.device), visual):
            raise InvalidInputError(
                f"{self.family.label} pruning prunes image tokens only; got visual_pos_masks covering "
                f"{int(where.sum())} tokens for {int(visual.sum())} image tokens (videos are not supported)"
            )
        kwargs["visual_pos_masks"] = where.gather(1, columns.to(where.device))
        if features is not None:
            index = kept[..., None].to(features[0].device)
            kwargs["deepstack_visual_embeds"] = [
                level.view(b, n, -1).gather(1, index.expand(-1, -1, level.shape[-1])).flatten(0, 1)
                for level in features
            ]

    def _stage1_relevance(self, pending, feats, embeds, visual, valid, b, n):
        crop = newline = None
        # the latest encoding of this model's images (generate() encodes once and reuses the
        # features for every forward when use_cache=False)
        encoded = self._encoded
        if encoded is None:
            encoded = {
                "cls": None,
                "image_sizes": None,
                "strategy": "default",
                "rows": None,
                "grid_thw": None,
                "packing": None,
            }
        pending = {**pending, **encoded}
        cls_rows = encoded["cls"]
        if self.relevance == "cls" and cls_rows is None:
            raise InvalidInputError(
                "relevance='cls' needs the vision tower to run in this forward (pixel_values); got "
                "pre-encoded image features. Use relevance='instruction' or 'uniform'"
            )
        if self.family.anyres:
            if pending["image_sizes"] is None:
                raise InvalidInputError("LLaVA-NeXT pruning needs image_sizes; got None")
            rel, crop, newline = next_layout(
                self.inner,
                cls_rows if self.relevance == "cls" else None,
                pending["image_sizes"],
                pending["strategy"],
            )
            layout = "the packed LLaVA-NeXT layout"
            rel, crop, newline = (per_row(x, b, n, layout) for x in (rel, crop, newline))
        elif self.relevance == "cls":
            if pending["strategy"] == "default":
                cls_rows = cls_rows[:, 1:]
            cls_rows = merge_cls(self.inner, self.family, cls_rows)
            rel = per_row(cls_rows.reshape(-1), b, n, "the CLS relevance")
        if self.relevance == "instruction":
            text = valid & ~visual
            empty = (~text.any(dim=1)).nonzero()[:, 0].tolist()
            if empty:  # no instruction to score against: refuse rather than score uniformly
                raise InvalidInputError(
                    f"relevance='instruction' scores the image tokens against the prompt's text; got rows "
                    f"{empty} without text tokens. Pass relevance='uniform' to select on diversity alone"
                )
            rel = instruction_relevance(feats, embeds, text)
        elif self.relevance == "uniform":
            rel = torch.ones(b, n, device=feats.device)
        return rel.float(), crop, newline

    def _stage1_positions(self, given, columns, b, length, new_mask, dev):
        """Positions of the kept columns.

        ``contiguous`` renumbers as the unpruned model would number a sequence of
        the pruned length: ``None`` stays ``None`` (the LLM counts from 0), given
        positions (``generate()`` counts real tokens, padding at 0) are recounted
        over the pruned mask. ``original`` gathers the given (or default) positions.
        """
        if self.positions == "contiguous":
            return None if given is None else renumber(new_mask)
        if given is None:
            given = torch.arange(length, device=dev)[None].expand(b, -1)
        if given.ndim == 2:
            return given.expand(b, -1).gather(1, columns)
        index = columns[None].expand(given.shape[0], -1, -1)
        return given.expand(-1, b, -1).gather(2, index)

    def _store_rope_deltas(self, positions, valid):
        """``rope_deltas = max kept position + 1 - kept length`` per row (``get_rope_index``'s definition)."""
        spatial = positions[-3:]
        top = spatial.masked_fill(~valid[None], torch.iinfo(spatial.dtype).min).amax(dim=(0, 2))
        self.inner.rope_deltas = (top + 1 - valid.sum(dim=1))[:, None]

    def _decode_inputs(self, seq, kwargs, past, wrapper=None, cache=None):
        kwargs = dict(kwargs)
        embeds = kwargs.get("inputs_embeds")
        q = embeds.shape[1] if embeds is not None else kwargs["input_ids"].shape[1]
        mapping = self.family.wrapper_mask and isinstance(kwargs.get("attention_mask"), dict)
        mask = self._two_d_mask(kwargs, wrapper)
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            extra = past - seq.pruned_len
            if mask.shape[1] == seq.full_len + extra + q:
                prompt = mask.gather(1, seq.columns.to(mask.device))
                kwargs["attention_mask"] = mask = torch.cat([prompt, mask[:, seq.full_len :]], dim=1)
            elif mask.shape[1] != past + q:
                raise InvalidInputError(
                    f"attention_mask while decoding a pruned prompt must cover the full prompt "
                    f"({seq.full_len} + {extra} generated + {q} new) or the pruned one ({past} + {q}); "
                    f"got shape {tuple(mask.shape)}"
                )
        # generate() keeps position_ids in the full prompt's coordinates; pruning removed
        # full_len - pruned_len real tokens before every generated one.
        removed = seq.full_len - seq.pruned_len
        given = kwargs.get("position_ids")
        if not self.family.mrope:
            if given is None and self.positions == "original":
                steps = torch.arange(past, past + q, device=seq.columns.device)
                kwargs["position_ids"] = (steps + removed)[None]
            elif given is not None and self.positions == "contiguous":
                kwargs["position_ids"] = given - removed
        if mapping:  # rebuilt on the pruned cache (generate drops token_type_ids after the prefill)
            hidden = (
                embeds
                if embeds is not None
                else torch.empty(
                    (*kwargs["input_ids"].shape, 0), dtype=self.lm.dtype, device=seq.columns.device
                )
            )
            kwargs["attention_mask"] = mask_mapping(
                self.inner, hidden, mask, cache, kwargs.get("position_ids"), None
            )
        return kwargs

    # ------------------------------------------------------------------ selection
    def _stage1_layouts(self, b, n):
        """Each row's token layout for :func:`tops_core.spatial` at Stage I, or ``None`` (plain cosine).

        Position-aware only for an ``Objective`` (the study behind the default measured it, not
        the rules), on the family's :attr:`~tops_adapters.hf.families.Family.layout`: square
        grids per image (LLaVA's patches, Gemma 3's pooled tokens) or per tile (the
        pixel-shuffled InternVL, Idefics3, SmolVLM), merged grids from ``image_grid_thw``
        (M-RoPE families) or ``image_sizes`` (Mistral 3), and LLaVA-NeXT's and OneVision's
        anyres packing (base and crops in one frame, :func:`~tops_adapters.layouts.anyres_positions`).

        Raises
        ------
        InvalidInputError
            Where the layout is known but this forward's images do not fit it, rather than
            selecting on the plain similarity behind the user's back.
        """
        if not (self.spatial and isinstance(self.objective, tops_core.Objective)):
            return None
        reader = {
            "patches": self._patch_layouts,
            "pooled": self._pooled_layouts,
            "shuffled": self._tile_layouts,
            "image_sizes": self._sized_layouts,
            "anyres": self._packed_layouts,
            "grid_thw": self._grid_thw_layouts,
        }[self.family.layout]
        return reader(b, n)

    def _patch_layouts(self, b, n):
        """LLaVA-1.5: each image's square patch grid (its CLS token apart under ``"full"``)."""
        vision = self.inner.config.vision_config
        strategy = (self._encoded or {}).get("strategy") or getattr(
            self.inner.config, "vision_feature_select_strategy", "default"
        )
        side = vision.image_size // vision.patch_size
        return [square_grids(side, n, self.family.label, cls=strategy == "full")] * b

    def _pooled_layouts(self, b, n):
        """Gemma 3: the projector average-pools each image to a square grid."""
        return [square_grids(math.isqrt(self.inner.config.mm_tokens_per_image), n, self.family.label)] * b

    def _tile_layouts(self, b, n):
        """InternVL, Idefics3, SmolVLM: a square grid per tile (:func:`~.families.tile_side`)."""
        return [square_grids(tile_side(self.inner), n, self.family.label)] * b

    def _grid_thw_layouts(self, b, n):
        """M-RoPE families: each image's ``image_grid_thw`` merged by ``spatial_merge_size``."""
        grid_thw = (self._encoded or {}).get("grid_thw")
        if grid_thw is None:
            raise InvalidInputError(
                f"spatial=True on {self.family.label} lays the tokens out on image_grid_thw; got a forward "
                f"without it (pre-encoded image features?). {NO_LAYOUT_HINT}"
            )
        merge = self.inner.config.vision_config.spatial_merge_size
        return rows_of(merged_grids(grid_thw.tolist(), merge), b, n)

    def _sized_layouts(self, b, n):
        """Mistral 3: each image's patch grid merged ``spatial_merge_size`` squared (:func:`sized_grids`)."""
        sizes = (self._encoded or {}).get("image_sizes")
        if sizes is None:
            raise InvalidInputError(
                f"spatial=True on {self.family.label} lays the tokens out on image_sizes; got a forward "
                f"without them (pre-encoded image features?). {NO_LAYOUT_HINT}"
            )
        ratio = self.inner.config.vision_config.patch_size * self.inner.config.spatial_merge_size
        return rows_of(sized_grids(torch.as_tensor(sizes).tolist(), ratio), b, n, source="image_sizes")

    def _packed_layouts(self, b, n):
        """LLaVA-NeXT / OneVision: each row's images placed by the model's own anyres packing."""
        packing = (self._encoded or {}).get("packing")
        if packing is None:
            raise InvalidInputError(
                f"spatial=True on {self.family.label} lays the tokens out by the model's anyres packing "
                f"(pack_image_features); got a forward without it (pre-encoded image features?). "
                f"{NO_LAYOUT_HINT}"
            )
        vision = self.inner.config.vision_config
        side = vision.image_size // vision.patch_size
        return packed_rows([anyres_positions(side, *shape) for shape in packed_images(**packing)], b, n)

    @staticmethod
    def _similarity(feats, layouts=None):
        """Cosine similarity of (B, N, D) features, position-aware on each row's layout if given."""
        sim = cosine_similarity(feats)
        if layouts is None:
            return sim
        if all(layout == layouts[0] for layout in layouts):
            return mixed(sim, layouts[0])
        return torch.stack([mixed(row, layout) for row, layout in zip(sim, layouts)])

    def _choose(self, rel, feats, k, crop=None, candidates=None, layouts=None):
        """Indices (B, k') into the N visual tokens to keep, ascending; k' adds always-kept ones.

        ``layouts``: each row's token layout (Stage I), for a position-aware similarity
        (candidates and crops take their tokens' places); after a pruning point the grid is gone.
        """
        b, n = rel.shape
        dev = rel.device
        if candidates is None and crop is None:
            if k >= n:
                return torch.arange(n, device=dev)[None].expand(b, -1), None
            sim = self._similarity(feats, layouts)
            sel = tops_core.select(rel, sim, k, objective=self.objective)
            return torch.as_tensor(sel.indices, device=dev).long(), sel
        rows, selections = [], []
        for row in range(b):
            pool = torch.ones(n, dtype=torch.bool, device=dev) if candidates is None else candidates[row]
            fixed = (~pool).nonzero()[:, 0]
            groups = [pool] if crop is None else [pool & (crop[row] == c) for c in crop[row][pool].unique()]
            sizes = [int(g.sum()) for g in groups]
            parts = split_budget(k, sizes)
            chosen = [fixed]
            for group, part in zip(groups, parts):
                where = group.nonzero()[:, 0]
                if part >= where.shape[0]:
                    chosen.append(where)
                    continue
                sim = cosine_similarity(feats[row, where][None])[0]
                if layouts is not None:  # anyres: the candidates' places
                    sim = mixed(sim, layouts[row].subset(where.tolist()))
                sel = tops_core.select(rel[row, where], sim, part, objective=self.objective)
                selections.append(sel)
                chosen.append(where[torch.as_tensor(sel.indices, device=dev).long()])
            rows.append(torch.cat(chosen).sort().values)
        return torch.stack(rows), (selections or None)
