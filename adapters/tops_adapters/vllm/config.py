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

__all__ = ["CONFIG_KEY", "OBJECTIVES", "RELEVANCE", "PruningConfig", "pruning_config"]

#: The ``hf_overrides`` key (and so the model-config attribute) that holds the settings.
CONFIG_KEY = "tops_pruning"

#: Objective names accepted in the settings and the selector each builds.
OBJECTIVES = {
    "tops": tops_core.TOPSRule,        # the paper's rule (default)
    "coverage": tops_core.Objective,   # certified relevance-weighted coverage
    "topk": tops_core.TopK,
    "divprune": tops_core.DivPrune,
    "scope": tops_core.SCOPE,
    "dpp": tops_core.DPP,
}

#: Vision-side relevance sources (``embed_multimodal`` never sees the prompt).
#: ``uniform``: every token equally relevant (selection by coverage and diversity);
#: ``norm``: the L2 norm of each merged visual token (a feature statistic).
RELEVANCE = ("uniform", "norm")

_KEYS = ("keep", "ratio", "objective", "relevance")


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
    """

    budget: Budget
    objective: str = "tops"
    relevance: str = "uniform"

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
    return PruningConfig(budget=budget, objective=objective, relevance=relevance)
