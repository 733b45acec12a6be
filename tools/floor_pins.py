"""Print the declared floors of the integrations' libraries as pins (``name==floor``).

``make lock`` compiles ``requirements/floor.txt`` with these pins, so the floor
environment tests exactly the lowest versions ``pyproject.toml`` admits.
"""

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

#: The libraries whose internals the integrations depend on (tops_adapters/hf/compat.py, mlx_vlm.py).
INTEGRATIONS = {"transformers": "transformers", "mlx-vlm": "mlx-vlm"}


def floor_pins(pyproject: Path) -> list[str]:
    """``name==X`` for each integration library, X the ``>=`` bound its extra declares."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    pins = []
    for extra, name in INTEGRATIONS.items():
        for line in extras[extra]:
            requirement = Requirement(line)
            if requirement.name == name:
                floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
                if len(floors) != 1:
                    sys.exit(f"{extra} extra: {line!r} needs exactly one '>=' floor")
                pins.append(f"{name}=={floors[0]}")
    return pins


if __name__ == "__main__":
    print("\n".join(floor_pins(Path(__file__).resolve().parents[1] / "pyproject.toml")))
