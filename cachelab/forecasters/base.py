"""The stand-in interface and its registry."""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Sequence

#: Stand-ins by name (``forecaster=<name>`` on every built-in trigger).
FORECASTERS: dict[str, type["Forecaster"]] = {}


def register_forecaster(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        cls.name = name
        FORECASTERS[name] = cls
        return cls
    return add


class Forecaster(abc.ABC):
    """A rule that stands in for a skipped unit from what the unit kept.

    ``history``: how many computed outputs the runtime keeps for it. A linear forecaster (``LinearForecaster``)
    returns weights over those outputs, which the policy hands to the runtime in its decision; a stateful one
    keeps a ``state()`` per unit and CFG branch that sees every computed output and makes every stand-in."""

    name: ClassVar[str] = ""
    history: int = 1
    #: False where a stand-in mixes positions of the sequence (DMD's SVD), so a rank's shard would give another one.
    elementwise: ClassVar[bool] = True

    def state(self) -> Any:
        """A fresh per-unit state (``keep(output, step)``, ``stand_in(step)``), or None for linear forecasters."""
        return None

    def __repr__(self) -> str:
        return self.name


class LinearForecaster(Forecaster):
    @abc.abstractmethod
    def weights(self, steps: Sequence[int], target: int) -> list[float]:
        """Weights over the outputs computed at ``steps`` (newest first) that stand in for step ``target``."""

    def cached_weights(self, steps: tuple[int, ...], target: int) -> tuple[float, ...]:
        """``weights``, worked out once per (steps, target): every module of a call asks for the same ones."""
        cache = self.__dict__.setdefault("_weights", {})
        key = (tuple(steps), target)
        if key not in cache:
            cache[key] = tuple(float(w) for w in self.weights(steps, target))
        return cache[key]


def make_forecaster(name: str, order: int = 1) -> Forecaster:
    """The stand-in called ``name``; ``order`` is the order of the Taylor and Hermite expansions."""
    if name not in FORECASTERS:
        raise ValueError(f"unknown forecaster {name!r}; forecasters: {', '.join(sorted(FORECASTERS))}")
    cls = FORECASTERS[name]
    return cls(order) if getattr(cls, "has_order", False) else cls()
