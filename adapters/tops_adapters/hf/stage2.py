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

from .scores import rater_relevance
from .sequence import StageRecord, gather_mask, kept_columns, renumber

__all__ = ["Stage2Mixin"]


class Stage2Mixin:
    """Stage II methods of :class:`~tops_adapters.hf.session.Pruning`."""

    def _wrap_layer(self, original, index):
        budgets = dict(self.schedule.stage2)

        @functools.wraps(original)
        def forward(hidden, *args, **kwargs):
            seq = self._active
            if seq is None:  # a sequence this session did not prune
                return original(hidden, *args, **kwargs)
            if seq.prefilling:
                if seq.override is not None:
                    kwargs.update(seq.override)
                if index in budgets:
                    with torch.no_grad():
                        hidden, seq.override = self._stage2(seq, index, budgets[index], hidden, kwargs)
                    kwargs.update(seq.override)
                return original(hidden, *args, **kwargs)
            stage = self._stage_for(seq, index)
            if stage is not None:
                kwargs.update(self._decode_overrides(seq, stage, hidden, kwargs))
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
        hidden = hidden.gather(1, columns[..., None].expand(-1, -1, dim))
        override = {"attention_mask": gather_mask(kwargs.get("attention_mask"), columns, rows=True)}
        position_ids = kwargs.get("position_ids")
        if self.positions == "contiguous":
            new_ids = renumber(seq.valid)
            override["position_embeddings"] = self.lm.rotary_emb(hidden, new_ids)
            if position_ids is not None:
                override["position_ids"] = new_ids
        else:
            index = columns[..., None].expand(-1, -1, cos.shape[-1])
            override["position_embeddings"] = (cos.gather(1, index), sin.gather(1, index))
            if position_ids is not None:
                override["position_ids"] = position_ids.expand(b, -1).gather(1, columns)
        return hidden, override

    def _decode_overrides(self, seq, stage, hidden, kwargs):
        if stage in seq.step:
            return seq.step[stage]
        _, cum = seq.stages[stage]
        b = cum.shape[0]
        dev = cum.device
        out = {}
        mask = kwargs.get("attention_mask")
        if mask is not None:
            total = mask.shape[-1]
            kv = torch.cat([cum, torch.arange(seq.pruned_len, total, device=dev)[None].expand(b, -1)], dim=1)
            out["attention_mask"] = gather_mask(mask, kv, rows=False)
        if self.positions == "contiguous":
            shift = seq.pruned_len - cum.shape[1]
            ids = kwargs["position_ids"].expand(b, -1) - shift
            out["position_embeddings"] = self.lm.rotary_emb(hidden, ids)
            out["position_ids"] = ids
        seq.step[stage] = out
        return out
