"""What every pruned architecture shares: its settings, the start-up checks, the selection, its records.

Two mixins, each placed ahead of a vLLM class: :class:`PrunedPlaceholders` on
the multimodal processor (an image's placeholders are the tokens kept of it)
and :class:`PrunedModel` on the model (which tokens those are).
"""

from __future__ import annotations

import torch

import tops_core
from tops_core._validate import InvalidInputError

from ..hf.scores import cosine_similarity
from ..layouts import mixed
from .compat import start_up_conflicts, with_replacement
from .config import CONFIG_KEY, PruningConfig, pruning_config

__all__ = ["PrunedPlaceholders", "PrunedModel"]


class PrunedPlaceholders:
    """Processor mixin: each image gets as many placeholders as tokens will be kept of it.

    vLLM sizes placeholders before the encoder runs, so the count is a
    function of the image's ``N`` and the settings only. Videos are unchanged.
    """

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        settings = pruning_config(self.info.get_hf_config())
        if settings is None:
            return updates
        return [self._pruned(u, settings, mm_items) if u.modality == "image" else u for u in updates]

    def _pruned(self, update, settings: PruningConfig, mm_items):
        original = update.replacement

        def replacement(item_idx: int) -> list[int]:
            ids = original(item_idx) if callable(original) else original
            if not isinstance(ids, list) or len(set(ids)) != 1:
                raise InvalidInputError(
                    f"hf_overrides[{CONFIG_KEY!r}] needs an image's placeholders to be one repeated token; "
                    f"{type(self).__name__} gave {type(ids).__name__}"
                )
            return ids[:1] * self.kept_placeholders(settings, len(ids), mm_items, item_idx)

        return with_replacement(update, replacement)

    def kept_placeholders(self, settings: PruningConfig, n: int, mm_items, item_idx: int) -> int:
        """Placeholders of an image whose unpruned prompt has ``n`` (every token is a candidate)."""
        return settings.tokens(n)


class PrunedModel:
    """Model mixin: the settings, checked at start-up, and the selection of each image's tokens.

    Configured by ``hf_overrides={"tops_pruning": {...}}`` (see
    :func:`tops_adapters.vllm.config.pruning_config`); without that entry the
    model runs exactly as vLLM's own class. ``tops_records`` holds the latest
    ``record`` selections (features, relevance, grid, kept indices) for
    inspection, e.g. through ``LLM.apply_model``.
    """

    def __init__(self, *, vllm_config, prefix: str = ""):  # the signature vLLM's loader looks for
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.tops = pruning_config(self.config)
        self.tops_records: list[dict] = []
        if self.tops is None:
            return
        conflicts = start_up_conflicts(vllm_config)
        if conflicts:
            raise InvalidInputError(f"hf_overrides[{CONFIG_KEY!r}] cannot run with " + "; ".join(conflicts))
        self.start_pruning(vllm_config)

    def start_pruning(self, vllm_config) -> None:
        """Family set-up once the settings are known (buffers, refusals); nothing by default."""

    def keep(self, features: torch.Tensor, grid) -> torch.Tensor:
        """Ascending indices of the kept rows of one image's ``(N, d)`` candidate tokens.

        ``budget.tokens(N)`` of them, chosen by :func:`tops_core.select` on the
        features' device from their cosine similarity, made position-aware on
        ``grid`` (the candidates' layout: grids, or
        :class:`~tops_adapters.layouts.Placed` positions) when the settings say
        ``spatial``.
        """
        n = features.shape[0]
        k = self.tops.tokens(n)
        dev = features.device
        if self.tops.relevance == "norm":
            relevance = features.float().norm(dim=-1)
        else:
            relevance = torch.ones(n, device=dev)
        if k < n:
            sim = cosine_similarity(features[None])[0]
            if self.tops.spatial:
                sim = mixed(sim, grid)
            selection = tops_core.select(relevance, sim, k, objective=self.tops.selector())
            kept = torch.as_tensor(selection.indices, device=dev).long()
        else:
            kept = torch.arange(n, device=dev)
        if self.tops.record:
            self.tops_records = [
                *self.tops_records,
                {
                    "features": features.detach().cpu(),
                    "relevance": relevance.cpu(),
                    "grid": grid,
                    "kept": kept.cpu(),
                },
            ][-self.tops.record :]
        return kept
