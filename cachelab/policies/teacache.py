"""TeaCache (Liu et al., CVPR 2025): accumulate the rescaled change of the modulated input."""

from __future__ import annotations

from typing import Sequence

from .base import CachePolicy, Decision, StepContext, check_number, compute, relative_l1, reuse
from .registry import register_policy


def rescale(coefficients: Sequence[float], x: float) -> float:
    """The polynomial with ``coefficients`` (highest degree first) at ``x``, as numpy.poly1d does."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return value


@register_policy("teacache")
class TeaCache(CachePolicy):
    """Skip while the accumulated rescaled relative L1 change of the first block's modulated input
    stays below ``threshold``. First and last steps always compute.

    ``coefficients`` default to the published ones of the model family (see ``cachelab.models``);
    the executor fills them in at attach time.
    """

    signals = ("modulated_input",)
    uses_threshold = True

    def __init__(self, threshold: float = 0.4, coefficients: Sequence[float] | None = None):
        self.threshold = check_number("threshold", threshold)
        self.coefficients = None if coefficients is None else [float(c) for c in coefficients]
        self.reset()

    def params(self):
        return {"threshold": self.threshold, "coefficients": self.coefficients}

    def for_model(self, spec) -> "TeaCache":
        if self.coefficients is not None:
            return self
        if spec.teacache_coefficients is None:
            raise ValueError(
                f"TeaCache has no published coefficients for the {spec.family} family; pass "
                "TeaCache(coefficients=[...]) (policy.coefficients=[...] on the command line; fit them with "
                "cachelab.calibrate.teacache_coefficients), or coefficients=[1.0, 0.0] for the raw relative change"
            )
        return TeaCache(self.threshold, spec.teacache_coefficients)

    def reset(self) -> None:
        self.previous_input = None
        self.accumulated = 0.0

    def decide(self, ctx: StepContext) -> Decision:
        current = ctx.signals["modulated_input"]
        previous, self.previous_input = self.previous_input, current
        if previous is None or ctx.is_first or ctx.is_last:
            self.accumulated = 0.0
            return compute()
        change = relative_l1(current, previous)
        self.accumulated += rescale(self.coefficients, change)
        if self.accumulated < self.threshold:
            return reuse(change)
        self.accumulated = 0.0
        return compute(change)
