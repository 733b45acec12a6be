"""Token budgets and the pruning schedule: k depends on N and the config only, never on data."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tops_core._validate import InvalidInputError

__all__ = ["Budget", "Schedule", "split_budget"]


@dataclass(frozen=True)
class Budget:
    """How many visual tokens to keep out of ``N``.

    Give exactly one of ``keep`` (a token count) or ``ratio`` (a fraction of
    ``N``). The count is a function of ``N`` only, so serving engines can size
    buffers before any feature exists. A budget above ``N`` keeps all ``N``
    tokens ("keep at most").

    Parameters
    ----------
    keep : int, optional
        Tokens to keep, ``>= 1``.
    ratio : float, optional
        Fraction to keep, ``0 < ratio <= 1``; ``k = max(1, round(ratio * N))``.
    """

    keep: int | None = None
    ratio: float | None = None

    def __post_init__(self):
        if (self.keep is None) == (self.ratio is None):
            raise InvalidInputError(
                f"Budget needs exactly one of keep= or ratio=; got keep={self.keep!r}, ratio={self.ratio!r}"
            )
        if self.keep is not None and (
            isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1
        ):
            raise InvalidInputError(f"keep must be an int >= 1; got {self.keep!r}")
        if self.ratio is not None and not (
            isinstance(self.ratio, (int, float)) and 0 < self.ratio <= 1 and math.isfinite(self.ratio)
        ):
            raise InvalidInputError(f"ratio must be a float in (0, 1]; got {self.ratio!r}")

    def tokens(self, n: int) -> int:
        """Tokens kept out of ``n`` (``0`` when ``n == 0``)."""
        if n <= 0:
            return 0
        k = self.keep if self.keep is not None else max(1, round(self.ratio * n))
        return min(k, n)


def _as_budget(value, name: str) -> Budget:
    if isinstance(value, Budget):
        return value
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a Budget, an int (tokens) or a float ratio; got {value!r}")
    if isinstance(value, int):
        return Budget(keep=value)
    if isinstance(value, float):
        return Budget(ratio=value)
    raise InvalidInputError(
        f"{name} must be a Budget, an int (tokens) or a float ratio; got {type(value).__name__}"
    )


@dataclass(frozen=True)
class Schedule:
    """Where to prune and how much: Stage I before the LLM, Stage II inside it.

    Parameters
    ----------
    stage1 : Budget, int, float or None
        Budget after the projector (``None``: no Stage I).
    stage2 : sequence of (layer, Budget | int | float)
        In-LLM pruning points, strictly increasing decoder-layer indices
        ``>= 1``; each budget applies to the tokens left by the previous stage.

    Examples
    --------
    >>> s = Schedule.paper(128)    # LLaVA 7B: 256 before the LLM, 64 at layer 12, 32 at 24
    >>> s.stage1.keep, [(layer, b.keep) for layer, b in s.stage2]
    (256, [(12, 64), (24, 32)])
    """

    stage1: Budget | None = None
    stage2: tuple = field(default=())

    def __post_init__(self):
        if self.stage1 is not None:
            object.__setattr__(self, "stage1", _as_budget(self.stage1, "stage1"))
        points = []
        for item in self.stage2:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise InvalidInputError(f"stage2 entries must be (layer, budget) pairs; got {item!r}")
            layer, budget = item
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
                raise InvalidInputError(f"stage2 layer must be an int >= 1; got {layer!r}")
            points.append((layer, _as_budget(budget, f"stage2 budget at layer {layer}")))
        layers = [p[0] for p in points]
        if layers != sorted(set(layers)):
            raise InvalidInputError(f"stage2 layers must be strictly increasing; got {layers}")
        object.__setattr__(self, "stage2", tuple(points))

    @classmethod
    def paper(cls, tokens: int, layers: tuple[int, int] = (12, 24)) -> Schedule:
        """The paper's schedule for an average of ``tokens`` (T) visual tokens per layer.

        Stage I keeps ``2T``; Stage II keeps ``T/2`` at ``layers[0]`` and ``T/4``
        at ``layers[1]`` (12/24 for 32-layer 7B LLMs, 15/30 for 13B, 12/16 for
        Qwen2.5-VL-7B).
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 4:
            raise InvalidInputError(f"tokens must be an int >= 4; got {tokens!r}")
        return cls(stage1=2 * tokens, stage2=((layers[0], tokens // 2), (layers[1], tokens // 4)))

    def check_depth(self, num_layers: int) -> None:
        """Reject pruning layers the LLM does not have."""
        for layer, _ in self.stage2:
            if layer >= num_layers:
                raise InvalidInputError(
                    f"stage2 layer must be < the LLM's {num_layers} decoder layers; got layer {layer}"
                )


def split_budget(k: int, sizes: list[int]) -> list[int]:
    """Split ``k`` over groups of ``sizes`` proportionally (largest remainder, ties to the first).

    Every group gets at most its size and the parts sum to ``min(k, sum(sizes))``.
    """
    total = sum(sizes)
    k = min(k, total)
    if total == 0:
        return [0] * len(sizes)
    exact = [k * s / total for s in sizes]
    parts = [min(math.floor(e), s) for e, s in zip(exact, sizes)]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - parts[i]), i))
    left = k - sum(parts)
    for i in order * 2:
        if left == 0:
            break
        if parts[i] < sizes[i]:
            parts[i] += 1
            left -= 1
    return parts
