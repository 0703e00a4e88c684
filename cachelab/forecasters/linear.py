"""Stand-ins that are fixed linear combinations of a unit's kept outputs: reuse, Taylor (both conventions), Hermite."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .base import LinearForecaster, register_forecaster
from .taylor import taylor_weights


def ladder(steps: Sequence[int], order: int) -> list[np.ndarray]:
    """The divided-difference ladder D_0 .. D_order at the newest of ``steps`` (newest first), as weights over the
    outputs: on every computed step D_0 = F and D_(i+1) = (D_i - D_i at the previous computed step) / distance."""
    steps = list(steps)[: order + 1]
    count = len(steps)
    older: list[np.ndarray] = []
    for k in reversed(range(count)):
        rungs = [np.eye(count)[k]]
        for i in range(min(order, len(older))):
            rungs.append((rungs[i] - older[i]) / (steps[k] - steps[k + 1]))
        older = rungs
    return older


def physicists_hermite(x: float, n: int) -> float:
    """H_n(x) by the recurrence H_(k+1) = 2x H_k - 2k H_(k-1), H_0 = 1, H_1 = 2x."""
    previous, current = 1.0, 2.0 * x
    if n == 0:
        return previous
    for k in range(1, n):
        previous, current = current, 2.0 * x * current - 2.0 * k * previous
    return current


def hermite_weights(steps: Sequence[int], target: int, order: int, scale: float) -> list[float]:
    """HiCache (ICLR 2026, arXiv 2508.16984): the Taylor forecast with each term D_k d^k / k! replaced by
    D_k sigma^k H_k(sigma d) / k! (physicists' Hermite polynomials, sigma = ``scale``), d the distance in steps
    from the newest computed step."""
    rungs = ladder(steps, order)
    distance = target - list(steps)[0]
    total = sum(term * scale**k * physicists_hermite(scale * distance, k) / math.factorial(k) for k, term in enumerate(rungs))
    return [float(w) for w in total]


@register_forecaster("reuse")
class Reuse(LinearForecaster):
    """The newest kept output."""

    def weights(self, steps, target):
        return [1.0]


class _Ordered(LinearForecaster):
    has_order = True

    def __init__(self, order: int = 1):
        if not (isinstance(order, int) and order >= 1):
            raise ValueError(f"{self.name}'s order must be an integer >= 1, got {order!r}")
        self.order = order
        self.history = order + 1

    def __repr__(self) -> str:
        return f"{self.name}(order={self.order})"


@register_forecaster("taylor")
class Taylor(_Ordered):
    """cache-dit's TaylorSeer calibrator: derivatives over the step distance, formed from the fourth call on."""

    def weights(self, steps, target):
        return taylor_weights(steps, target, self.order)


@register_forecaster("taylor_diffusers")
class TaylorDiffusers(_Ordered):
    """diffusers' ``TaylorSeerCacheConfig`` factors: divided differences from the second computed step on."""

    def weights(self, steps, target):
        distance = target - list(steps)[0]
        return [float(w) for w in sum(t * distance**i / math.factorial(i) for i, t in enumerate(ladder(steps, self.order)))]


@register_forecaster("hermite")
class Hermite(_Ordered):
    """HiCache's scaled Hermite expansion; ``scale`` 0.5 is the published default."""

    def __init__(self, order: int = 1, scale: float = 0.5):
        super().__init__(order)
        self.scale = scale

    def weights(self, steps, target):
        return hermite_weights(steps, target, self.order, self.scale)
