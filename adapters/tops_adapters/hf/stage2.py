"""Stage II: pruning inside the LLM at the schedule's decoder layers, in prefill and decoding.

Every decoder layer from the first Stage II point on is wrapped. In prefill, a
pruning layer scores the visual tokens by text-rater attention, keeps the
selection and hands the following layers the pruned hidden states, mask and
positions. While decoding, the layers after a pruning point see their own
(shorter) KV cache: mask columns and, for contiguous positions, RoPE are
mapped onto it.
"""

from __future__ import annotations

import functools

import torch

from .compat import layer_type, rotary_embeddings
from .scores import rater_relevance
from .sequence import StageRecord, gather_mask, kept_columns, renumber

__all__ = ["Stage2Mixin"]


class Stage2Mixin:
    """Stage II methods of :class:`~tops_adapters.hf.session.Pruning`."""

    def _wrap_layer(self, original, index):
        budgets = dict(self.schedule.stage2)
        kind = layer_type(self.lm, index)

        @functools.wraps(original)
        def forward(hidden, *args, **kwargs):
            seq = self._active
            if seq is None:  # a sequence this session did not prune
                return original(hidden, *args, **kwargs)
            if seq.prefilling:
                # the layer's own arguments (full Stage I length) are mapped onto the stages so far;
                # each layer type (full / sliding / linear attention) has its own mask and RoPE
                own = dict(kwargs)
                if seq.stages:
                    kwargs.update(self._prefill_overrides(seq, kind, hidden, own))
                if index in budgets:
                    with torch.no_grad():
                        hidden = self._stage2(seq, index, budgets[index], hidden, kwargs)
                        seq.override = {}
                        kwargs.update(self._prefill_overrides(seq, kind, hidden, own))
                return original(hidden, *args, **kwargs)
            stage = self._stage_for(seq, index)
            if stage is not None:
                kwargs.update(self._decode_overrides(seq, stage, kind, hidden, kwargs))
            return original(hidden, *args, **kwargs)

        return forward

    @staticmethod
    def _stage_for(seq, index):
        found = None
        for number, (layer, _) in enumerate(seq.stages):
            if layer <= index:
                found = number
        return found

    def _stage2(self, seq, layer_index, budget, hidden, kwargs):
        """Rate and select the visual tokens entering ``layer_index``; the pruned hidden states."""
        b, length, dim = hidden.shape
        dev = hidden.device
        cos, sin = kwargs["position_embeddings"]
        cos, sin = cos.expand(b, -1, -1), sin.expand(b, -1, -1)
        visual_pos = seq.visual_pos
        n = visual_pos.shape[1]
        layer = self.lm.layers[layer_index]
        rel = rater_relevance(layer, hidden, cos, sin, visual_pos, seq.valid, self.raters)
        feats = hidden.gather(1, visual_pos[..., None].expand(-1, -1, dim))
        kept, selection = self._choose(rel, feats, budget.tokens(n))
        visual = torch.zeros(b, length, dtype=torch.bool, device=dev).scatter(1, visual_pos, True)
        columns = kept_columns(visual, visual_pos, kept)
        self.history.append(StageRecord(layer_index, visual_pos, rel, kept, columns, selection))
        previous = seq.stages[-1][1] if seq.stages else torch.arange(length, device=dev)[None].expand(b, -1)
        seq.stages.append((layer_index, previous.gather(1, columns)))
        seq.valid = seq.valid.gather(1, columns)
        seq.visual_pos = visual.gather(1, columns).nonzero()[:, 1].view(b, -1)
        return hidden.gather(1, columns[..., None].expand(-1, -1, dim))

    def _prefill_overrides(self, seq, kind, hidden, own):
        """A prefill layer's mask, RoPE and positions (its own, full Stage I length) on the current stage."""
        if kind in seq.override:
            return seq.override[kind]
        cum = seq.stages[-1][1]  # kept columns of the Stage I sequence
        b = cum.shape[0]
        override = {"attention_mask": gather_mask(own.get("attention_mask"), cum, rows=True)}
        position_ids = own.get("position_ids")
        if self.positions == "contiguous":
            new_ids = renumber(seq.valid)
            override["position_embeddings"] = rotary_embeddings(self.lm, hidden, new_ids, kind)
            if position_ids is not None:
                override["position_ids"] = new_ids
        else:
            cos, sin = own["position_embeddings"]
            index = cum[..., None].expand(-1, -1, cos.shape[-1])
            override["position_embeddings"] = (
                cos.expand(b, -1, -1).gather(1, index),
                sin.expand(b, -1, -1).gather(1, index),
            )
            if position_ids is not None:
                override["position_ids"] = position_ids.expand(b, -1).gather(1, cum)
        seq.override[kind] = override
        return override

    def _decode_overrides(self, seq, stage, kind, hidden, kwargs):
        if (stage, kind) in seq.step:
            return seq.step[stage, kind]
        _, cum = seq.stages[stage]
        b = cum.shape[0]
        dev = cum.device
        out = {}
        mask = kwargs.get("attention_mask")
        q = hidden.shape[1]
        # a linear-attention layer's mask covers the new tokens only (no KV cache columns to map)
        query_only = isinstance(mask, torch.Tensor) and mask.ndim == 2 and mask.shape[1] == q
        if mask is not None and not (query_only and kind == "linear_attention"):
            total = mask.shape[-1]
            kv = torch.cat([cum, torch.arange(seq.pruned_len, total, device=dev)[None].expand(b, -1)], dim=1)
            out["attention_mask"] = gather_mask(mask, kv, rows=False)
        if self.positions == "contiguous":
            shift = seq.pruned_len - cum.shape[1]
            ids = kwargs["position_ids"].expand(b, -1) - shift
            out["position_embeddings"] = rotary_embeddings(self.lm, hidden, ids, kind)
            out["position_ids"] = ids
        seq.step[stage, kind] = out
        return out
