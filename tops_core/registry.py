"""The one list of what ``select`` runs: the objective's solvers and the rules.

``select`` resolves ``method=`` names and accepts rule instances from here;
the native adapters read where each method runs on a device; the docs render
:func:`table`. Adding a solver or a rule is one :class:`Method` entry (see
CONTRIBUTING).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tops_core.rules import DPP, SCOPE, DivPrune, TopK, TOPSRule
from tops_core.solvers import Exact, Greedy, Incremental, Lazy, Stochastic

__all__ = ["Method", "METHODS", "SOLVERS", "RULES", "AUTO", "method_of", "table"]


@dataclass(frozen=True)
class Method:
    """One solver or rule and where it runs.

    Parameters
    ----------
    name : str
        Its ``name``: the ``method=`` string of a solver, the ``method`` a
        rule's selection reports.
    kind : {"solver", "rule"}
        A solver maximises an :class:`~tops_core.Objective`; a rule builds a
        set by its own step score.
    cls : type
        The class (a frozen dataclass).
    native : str or None
        The on-device loop that runs it for PyTorch CUDA tensors
        (``tops_adapters._native_solvers``): ``"greedy"``, ``"lazy"`` or the
        rule's name; ``None`` when only the core runs it (a host copy).
    fused : bool
        Whether a fused Triton kernel runs it on CUDA
        (:mod:`tops_adapters.triton_kernels`).
    greedy_answer : bool
        Whether its answer is the objective's greedy, bit for bit (then
        :class:`~tops_core.Features` mode can run it).
    summary : str
        One line for the docs.
    """

    name: str
    kind: Literal["solver", "rule"]
    cls: type
    native: str | None
    fused: bool
    greedy_answer: bool
    summary: str


#: Every solver and rule, in the order the docs list them.
METHODS: tuple[Method, ...] = (
    Method(
        "incremental",
        "solver",
        Incremental,
        native="greedy",
        fused=True,
        greedy_answer=True,
        summary="greedy's answer bit for bit from one pass and O(N) updates; what `auto` runs",
    ),
    Method(
        "greedy",
        "solver",
        Greedy,
        native="greedy",
        fused=True,
        greedy_answer=True,
        summary="every gain fresh at every step: the reference",
    ),
    Method(
        "lazy",
        "solver",
        Lazy,
        native="lazy",
        fused=True,
        greedy_answer=True,
        summary="greedy's answer from stale upper bounds (a heap)",
    ),
    Method(
        "stochastic",
        "solver",
        Stochastic,
        native=None,
        fused=False,
        greedy_answer=False,
        summary="a randomised greedy on sampled candidates",
    ),
    Method(
        "exact",
        "solver",
        Exact,
        native=None,
        fused=False,
        greedy_answer=False,
        summary="an optimum by MILP (SciPy's HiGHS), small N",
    ),
    Method(
        "tops_rule",
        "rule",
        TOPSRule,
        native="tops_rule",
        fused=True,
        greedy_answer=False,
        summary="the paper's rule: relevance, diversity and coverage re-normalised each step",
    ),
    Method(
        "topk",
        "rule",
        TopK,
        native="topk",
        fused=False,
        greedy_answer=False,
        summary="the k most relevant tokens (FastV, FasterVLM)",
    ),
    Method(
        "divprune",
        "rule",
        DivPrune,
        native="divprune",
        fused=False,
        greedy_answer=False,
        summary="farthest-point greedy on 1 - F (DivPrune)",
    ),
    Method(
        "scope",
        "rule",
        SCOPE,
        native=None,
        fused=False,
        greedy_answer=False,
        summary="coverage gain times saliency (SCOPE)",
    ),
    Method(
        "dpp",
        "rule",
        DPP,
        native="dpp",
        fused=False,
        greedy_answer=False,
        summary="greedy MAP of a relevance-weighted DPP (CDPruner)",
    ),
)

#: The solver ``select(method="auto")`` runs for an objective.
AUTO = Incremental

#: Solvers by the name ``select(method=...)`` accepts.
SOLVERS: dict[str, type] = {m.name: m.cls for m in METHODS if m.kind == "solver"}

#: Rules by their ``name``.
RULES: dict[str, type] = {m.name: m.cls for m in METHODS if m.kind == "rule"}

_BY_TYPE = {m.cls: m for m in METHODS}


def method_of(obj: object) -> Method | None:
    """The registry entry of a solver or rule instance, or ``None`` for anything else."""
    return _BY_TYPE.get(type(obj))


def table() -> str:
    """The registry as a Markdown table (the docs include it)."""
    lines = ["| name | kind | class | on a CUDA device | what it does |", "|---|---|---|---|---|"]
    for m in METHODS:
        # a CUDA tensor goes to the fused kernel, else the native loop, else a host copy for the core
        device = "fused Triton kernel" if m.fused else "on-device loop" if m.native else "core (host copy)"
        lines.append(f"| `{m.name}` | {m.kind} | `{m.cls.__name__}` | {device} | {m.summary} |")
    return "\n".join(lines) + "\n"
