"""The committed locks agree with the declared ranges: what CI tests is what the extras promise."""

import importlib.util
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked(name: str) -> dict[str, Version]:
    """``{package: version}`` pinned by ``requirements/<name>.txt``."""
    pins = {}
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            package, version = line.split("==")
            pins[package.strip().lower()] = Version(version.split(";")[0].strip())
    return pins


def extra_requirements():
    for extra, lines in PYPROJECT["project"]["optional-dependencies"].items():
        for line in lines:
            requirement = Requirement(line)
            if requirement.name != "tops-prune" and (
                requirement.marker is None or requirement.marker.evaluate()
            ):
                yield extra, requirement


def floor_pins():
    spec = importlib.util.spec_from_file_location("floor_pins", ROOT / "tools" / "floor_pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.floor_pins(ROOT / "pyproject.toml")


@pytest.mark.parametrize("lock", ["lock", "floor"])
def test_every_locked_version_satisfies_the_declared_range(lock):
    pins = locked(lock)
    checked = 0
    for extra, requirement in extra_requirements():
        name = requirement.name.lower()
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                lock,
                extra,
                str(requirement),
            )
            checked += 1
    assert checked >= (20 if lock == "lock" else 5)


def test_the_floor_lock_pins_the_declared_floors():
    floor = locked("floor")
    for pin in floor_pins():
        name, version = pin.split("==")
        assert floor[name] == Version(version), f"requirements/floor.txt is stale for {pin}: run make lock"


def test_the_tested_transformers_are_the_locked_ends():
    """The floor lock pins the oldest tested transformers, the main lock the newest tested."""
    pytest.importorskip("transformers")
    from tops_adapters.hf.compat import TESTED_TRANSFORMERS

    floor, newest = locked("floor"), locked("lock")
    assert [Version(v) for v in TESTED_TRANSFORMERS] == [floor["transformers"], newest["transformers"]]


def test_the_pre_commit_hooks_run_tools_the_dev_extra_locks():
    """Each local hook runs ``.venv/bin/python -m <tool>``: the tool must be in the dev extra and the lock."""
    yaml = pytest.importorskip("yaml", reason="needs PyYAML (the dev or docs extra)")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hook_tools = {hook["entry"].split()[2] for repo in config["repos"] for hook in repo["hooks"]}
    dev = {Requirement(line).name for line in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert hook_tools == {"ruff", "mypy"}
    assert hook_tools | {"pre-commit"} <= dev
    assert hook_tools | {"pre-commit"} <= set(locked("lock"))


def test_the_core_ships_its_type_marker():
    assert (ROOT / "tops_core" / "py.typed").is_file()
    assert PYPROJECT["tool"]["mypy"]["packages"] == ["tops_core"]
