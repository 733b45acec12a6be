"""The plugin's settings and registration, without starting an engine."""

from types import SimpleNamespace

import pytest
import tops_adapters.vllm as plugin
from tops_adapters.vllm.config import pruning_config

import tops_core
from tops_core import InvalidInputError


def settings(**entry):
    return pruning_config(SimpleNamespace(tops_pruning=entry))


def test_absent_entry_means_no_pruning():
    assert pruning_config(SimpleNamespace()) is None


def test_budget_is_a_function_of_n_only():
    assert [settings(ratio=0.25).tokens(n) for n in (1, 16, 18, 256)] == [1, 4, 4, 64]
    assert [settings(keep=8).tokens(n) for n in (4, 8, 100)] == [4, 8, 8]


def test_objective_names_build_the_selectors():
    assert isinstance(settings(ratio=0.5).selector(), tops_core.TOPSRule)
    assert isinstance(settings(ratio=0.5, objective="coverage").selector(), tops_core.Objective)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"ratio": 1.5}, "ratio must be a float in (0, 1]; got 1.5"),
        ({"ratio": 0.0}, "ratio must be a float in (0, 1]; got 0.0"),
        ({"keep": 0}, "keep must be an int >= 1; got 0"),
        ({"keep": 4, "ratio": 0.5}, "exactly one of keep= or ratio="),
        ({"ratio": 0.5, "objective": "topz"}, "['objective'] must be one of 'tops'"),
        ({"ratio": 0.5, "relevance": "instruction"}, "['relevance'] must be one of 'uniform', 'norm'"),
        ({"ratio": 0.5, "rate": 1}, "got unknown ['rate']"),
    ],
)
def test_bad_settings_name_the_setting_the_rule_and_the_value(entry, message):
    with pytest.raises(InvalidInputError) as err:
        settings(**entry)
    assert "hf_overrides['tops_pruning']" in str(err.value)
    assert message in str(err.value)


def test_position_aware_similarity_is_the_coverage_default_and_switches_off():
    assert settings(ratio=0.5, objective="coverage").spatial is True
    assert settings(ratio=0.5, objective="coverage", spatial=False).spatial is False
    assert settings(ratio=0.5).spatial is False  # the paper's rule selects on the plain similarity


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"ratio": 0.5, "spatial": True}, "applies to objective 'coverage'"),
        ({"ratio": 0.5, "objective": "coverage", "spatial": "yes"}, "must be true or false; got str 'yes'"),
        ({"ratio": 0.5, "record": -1}, "['record'] must be an int >= 0; got -1"),
    ],
)
def test_bad_spatial_and_record_settings_are_refused(entry, message):
    with pytest.raises(InvalidInputError, match="hf_overrides") as err:
        settings(**entry)
    assert message in str(err.value)


@pytest.mark.parametrize("architecture", sorted(plugin.ARCHITECTURES))
def test_register_overrides_every_architecture_idempotently(architecture):
    from vllm import ModelRegistry

    plugin.register()
    plugin.register()
    cls = ModelRegistry._try_load_model_cls(architecture)
    assert f"{cls.__module__}:{cls.__name__}" == plugin.ARCHITECTURES[architecture]
    assert cls.__name__ == f"TOPS{architecture}"
    stock = next(c for c in cls.__mro__ if c.__module__.startswith("vllm."))
    assert stock.__name__ == architecture  # the plugin subclasses vLLM's own class
    # the pruning processor (LLaVA's: a factory choosing it, or vLLM's own for Pixtral-HF checkpoints)
    assert cls._processor_factory.processor.__module__.startswith("tops_adapters.vllm.")
