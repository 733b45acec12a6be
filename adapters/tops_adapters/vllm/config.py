"""The plugin's settings: parsed from ``hf_overrides={"tops_pruning": {...}}``, checked at start-up.

No vLLM import here: the same parsing serves the processor (which sizes the
placeholders) and the model (which selects the tokens), in whatever process
each runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import tops_core
from tops_core._validate import InvalidInputError, check_choice

from ..hf.budget import Budget

__all__ = ["CONFIG_KEY", "OBJECTIVES", "RELEVANCE", "SPATIAL_OBJECTIVES", "PruningConfig", "pruning_config"]

#: The ``hf_overrides`` key (and so the model-config attribute) that holds the settings.
CONFIG_KEY = "tops_pruning"

#: Objective names accepted in the settings and the selector each builds.
OBJECTIVES = {
    "tops": tops_core.TOPSRule,  # the paper's rule (default)
    "coverage": tops_core.Objective,  # certified relevance-weighted coverage
    "topk": tops_core.TopK,
    "divprune": tops_core.DivPrune,
    "scope": tops_core.SCOPE,
    "dpp": tops_core.DPP,
}

#: Vision-side relevance sources (``embed_multimodal`` never sees the prompt).
#: ``uniform``: every token equally relevant (selection by coverage and diversity);
#: ``norm``: the L2 norm of each merged visual token (a feature statistic).
RELEVANCE = ("uniform", "norm")

#: Objectives whose similarity is made position-aware (``spatial``, on by default): the certified
#: objective, which the study behind :func:`tops_core.spatial`'s defaults measured; the rules take
#: the plain similarity, as in the transformers and mlx-vlm integrations.
SPATIAL_OBJECTIVES = ("coverage",)

_KEYS = ("keep", "ratio", "objective", "relevance", "spatial", "record")


@dataclass(frozen=True)
class PruningConfig:
    """What the plugin does to every image: keep ``budget.tokens(N)`` of its ``N`` tokens.

    Parameters
    ----------
    budget : Budget
        A fixed count (``keep``) or a fraction (``ratio``) of ``N``; a function of ``N`` only,
        as vLLM sizes the placeholders before the encoder runs.
    objective : str
        A key of :data:`OBJECTIVES`.
    relevance : str
        One of :data:`RELEVANCE`.
    spatial : bool
        Select on :func:`tops_core.spatial` of the similarity, on each image's token grid. True
        only for an objective of :data:`SPATIAL_OBJECTIVES`.
    record : int
        How many of the latest selections the model keeps in ``tops_records`` (0: none).
    """

    budget: Budget
    objective: str = "tops"
    relevance: str = "uniform"
    spatial: bool = False
    record: int = 0

    def tokens(self, n: int) -> int:
        """Tokens kept out of an image's ``n``."""
        return self.budget.tokens(n)

    def selector(self):
        """A fresh ``tops_core`` objective or rule for :func:`tops_core.select`."""
        return OBJECTIVES[self.objective]()


def pruning_config(hf_config) -> PruningConfig | None:
    """Parse and check ``hf_config.tops_pruning`` (set through vLLM's ``hf_overrides``).

    Returns ``None`` when the entry is absent: the model then runs unpruned, so
    installing the plugin changes nothing until a model asks for pruning.

    Raises
    ------
    InvalidInputError
        Naming the setting, what it must be and what was given.
    """
    raw = getattr(hf_config, CONFIG_KEY, None)
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"hf_overrides[{CONFIG_KEY!r}] must be a dict; got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise InvalidInputError(
            f"hf_overrides[{CONFIG_KEY!r}] takes the keys {', '.join(_KEYS)}; got unknown {unknown}"
        )
    try:
        budget = Budget(keep=raw.get("keep"), ratio=raw.get("ratio"))
    except InvalidInputError as err:
        raise InvalidInputError(f"hf_overrides[{CONFIG_KEY!r}]: {err}") from None
    objective = raw.get("objective", "tops")
    relevance = raw.get("relevance", "uniform")
    check_choice(f"hf_overrides[{CONFIG_KEY!r}]['objective']", objective, OBJECTIVES)
    check_choice(f"hf_overrides[{CONFIG_KEY!r}]['relevance']", relevance, RELEVANCE)
    return PruningConfig(
        budget=budget,
        objective=objective,
        relevance=relevance,
        spatial=_spatial(raw, objective),
        record=_record(raw),
    )


def _record(raw: Mapping) -> int:
    record = raw.get("record", 0)
    if isinstance(record, bool) or not isinstance(record, int) or record < 0:
        raise InvalidInputError(f"hf_overrides[{CONFIG_KEY!r}]['record'] must be an int >= 0; got {record!r}")
    return record


def _spatial(raw: Mapping, objective: str) -> bool:
    """The ``spatial`` setting: on by default for the objectives it applies to, refused for the others."""
    spatial = raw.get("spatial")
    name = f"hf_overrides[{CONFIG_KEY!r}]['spatial']"
    if spatial is not None and not isinstance(spatial, bool):
        raise InvalidInputError(f"{name} must be true or false; got {type(spatial).__name__} {spatial!r}")
    if spatial and objective not in SPATIAL_OBJECTIVES:
        raise InvalidInputError(
            f"{name} applies to objective {' or '.join(map(repr, SPATIAL_OBJECTIVES))} (the rules select "
            f"on the plain similarity); got spatial=True with objective={objective!r}"
        )
    return objective in SPATIAL_OBJECTIVES and spatial is not False
