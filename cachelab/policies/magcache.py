"""MagCache (Ma et al., 2025): skip while the accumulated drift of calibrated residual magnitudes is small."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..tune.knobs import threshold_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy

# Published MagCache magnitude ratios (Zehong-Ma/MagCache) for FLUX.1-dev at 28 steps.
FLUX_MAG_RATIOS = (
    1.0, 1.21094, 1.11719, 1.07812, 1.0625, 1.03906, 1.03125, 1.03906, 1.02344, 1.03125, 1.02344, 0.98047,
    1.01562, 1.00781, 1.0, 1.00781, 1.0, 1.00781, 1.0, 1.0, 0.99609, 0.99609, 0.98047, 0.98828, 0.96484,
    0.95703, 0.93359, 0.89062,
)


def resample(ratios: Sequence[float], length: int) -> list[float]:
    """Nearest-neighbour resampling of calibrated per-step ratios to ``length`` steps."""
    if length == len(ratios):
        return list(ratios)
    if length == 1:
        return [ratios[-1]]
    scale = np.float32((len(ratios) - 1) / (length - 1))
    indices = np.round(np.arange(length, dtype=np.float32) * scale).astype(int)
    return [ratios[i] for i in indices]


@register_policy("magcache")
@dataclass(eq=False, repr=False)
class MagCache(CachePolicy, Forecasts):
    """After the first ``retention_ratio`` of the steps, multiply the per-step magnitude ratios
    (residual norm of step t over step t-1, from one calibration run) and add up ``|1 - product|``;
    reuse the residual of all blocks while that error stays within ``threshold`` and at most
    ``max_skip_steps`` steps in a row were reused. ``mag_ratios`` default to the model's calibration
    (the published FLUX ones); ``cachelab.calibrate.magcache_ratios`` measures them for any model.
    Signal: that accumulated error, up to and including this call (``None`` on the retention steps and
    at a first call after them, with nothing cached)."""
    parity = "diffusers MagCacheConfig: same decisions and images (tests/test_diffusers_parity.py)"

    uses_threshold = True
    calibrated = ("mag_ratios",)
    published = {"flux": {"mag_ratios": list(FLUX_MAG_RATIOS)}}

    threshold: float = 0.06
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    mag_ratios: Sequence[float] | None = None
    tune_knob = threshold_knob()  # what cachelab.tune searches

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        check_number("max_skip_steps", self.max_skip_steps, integer=True)
        check_number("retention_ratio", self.retention_ratio)
        if self.mag_ratios is not None:
            self.mag_ratios = [float(r) for r in self.mag_ratios]
        self.reset()

    def uncalibrated(self, missing, family):
        return (
            f"MagCache has no published magnitude ratios for the {family} family; pass "
            "MagCache(mag_ratios=[...]) (policy.mag_ratios=[...] on the command line) measured with "
            "cachelab.calibrate.magcache_ratios(pipe, prompts)"
        )

    def reset(self) -> None:
        self.ratios = None
        self.cached = False
        self.accumulated_ratio, self.accumulated_error, self.accumulated_steps = 1.0, 0.0, 0

    def decide(self, ctx: StepContext) -> Decision:
        num_steps = ctx.num_steps or len(self.mag_ratios)
        if self.ratios is None:
            self.ratios = resample(self.mag_ratios, num_steps)
        if ctx.step >= int(self.retention_ratio * num_steps + 0.5):
            self.accumulated_ratio *= self.ratios[ctx.step] if ctx.step < len(self.ratios) else 1.0
            self.accumulated_steps += 1
            self.accumulated_error += abs(1.0 - self.accumulated_ratio)
            error = self.accumulated_error if self.cached else None  # nothing cached yet: nothing to compare
            if error is not None and error <= self.threshold and self.accumulated_steps <= self.max_skip_steps:
                return self.skip(ctx, error)
            self.accumulated_ratio, self.accumulated_error, self.accumulated_steps = 1.0, 0.0, 0
            self.cached = True
            return compute(error)
        self.cached = True
        return compute()
