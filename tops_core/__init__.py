"""tops-prune: Token Optimal Preservation Sets for visual token pruning.

The public surface: :func:`select`, :class:`Selection`, :class:`Objective`, the
paper's :class:`TOPSRule` and its sibling rules, the solvers, :func:`normalize`
and :func:`cosine`, :func:`spatial`. Importing this package imports NumPy only.
"""

from tops_core._validate import InvalidInputError
from tops_core.api import select
from tops_core.features import Features
from tops_core.normalize import normalize
from tops_core.objective import Objective
from tops_core.rules import DPP, SCOPE, DivPrune, TopK, TOPSRule
from tops_core.selection import Selection
from tops_core.similarity import cosine
from tops_core.solvers import MAX_EXACT_N, Exact, Greedy, Incremental, Lazy, Stochastic
from tops_core.spatial import SpatialFeatures, spatial

__version__ = "0.1.0"

__all__ = [
    "select",
    "Selection",
    "Objective",
    "TOPSRule",
    "TopK",
    "DivPrune",
    "SCOPE",
    "DPP",
    "Greedy",
    "Lazy",
    "Incremental",
    "Stochastic",
    "Exact",
    "MAX_EXACT_N",
    "normalize",
    "cosine",
    "spatial",
    "Features",
    "SpatialFeatures",
    "InvalidInputError",
    "__version__",
]
