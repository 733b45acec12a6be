"""The registry is the one list: select, the native adapters and the docs read it."""

import importlib.util
import pathlib

import numpy as np
import pytest
from tops_adapters import _native_solvers

import tops_core
from tops_core.registry import AUTO, METHODS, RULES, SOLVERS, method_of, table

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_names_are_the_classes_names_and_unique():
    assert len({m.name for m in METHODS}) == len(METHODS)
    for m in METHODS:
        assert m.cls.name == m.name
        assert method_of(m.cls()) is m
    assert method_of(tops_core.Objective()) is None and method_of("greedy") is None
    assert AUTO in SOLVERS.values()


def test_every_public_solver_and_rule_is_registered():
    public = {getattr(tops_core, name) for name in tops_core.__all__}
    solvers = {cls for cls in public if isinstance(cls, type) and hasattr(cls, "run")}
    rules = {cls for cls in public if isinstance(cls, type) and hasattr(cls, "order")}
    assert solvers == set(SOLVERS.values())
    assert rules == set(RULES.values())


def test_native_loops_are_the_registered_ones():
    assert set(_native_solvers.RULE_LOOPS) == {m.name for m in METHODS if m.kind == "rule" and m.native}
    assert {m.native for m in METHODS if m.kind == "solver" and m.native} == {"greedy", "lazy"}
    objective = tops_core.Objective()
    for m in METHODS:
        plan = (
            _native_solvers.native_plan(objective, m.cls())
            if m.kind == "solver"
            else _native_solvers.native_plan(m.cls(), None)
        )
        assert plan == (None if m.native is None else (m.native, m.native == "lazy"))


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_select_resolves_every_registered_solver(name):
    rng = np.random.default_rng(3)
    sel = tops_core.select(rng.random(6), tops_core.cosine(rng.normal(size=(6, 3))), 3, method=name)
    assert sel.method == name and sel.indices.shape == (3,)


def test_select_refuses_an_unregistered_method_naming_the_registered_ones():
    with pytest.raises(tops_core.InvalidInputError, match="'auto', 'incremental', 'greedy'"):
        tops_core.select(np.ones(3), np.eye(3), 1, method="beam")


def test_features_mode_takes_exactly_the_greedy_answers():
    feats = tops_core.Features(np.random.default_rng(0).normal(size=(12, 4)))
    r = np.ones(12)
    for m in METHODS:
        if m.kind != "solver":
            continue
        if m.greedy_answer:
            assert tops_core.select(r, feats, 4, method=m.cls()).indices.shape == (4,)
        else:
            with pytest.raises(tops_core.InvalidInputError, match="runs the greedy of an Objective"):
                tops_core.select(r, feats, 4, method=m.cls())


def test_docs_render_the_registry():
    spec = importlib.util.spec_from_file_location("registry_hook", ROOT / "docs/hooks/registry.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = (ROOT / "docs/solvers.md").read_text()
    assert hook.MARKER in page
    rendered = hook.on_page_markdown(page)
    assert table() in rendered and hook.MARKER not in rendered
    for m in METHODS:
        assert f"| `{m.name}` | {m.kind} | `{m.cls.__name__}` |" in rendered
