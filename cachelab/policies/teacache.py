"""TeaCache (Liu et al., CVPR 2025): accumulate the rescaled change of the modulated input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..tune.knobs import threshold_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute, relative_l1
from .registry import register_policy

# Published TeaCache coefficients (ali-vilab/TeaCache), highest degree first.
PUBLISHED_COEFFICIENTS = {
    "flux": (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01),
    "hunyuan_video": (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02),
    "ltx_video": (2.14700694e01, -1.28016453e01, 2.31279151e00, 7.92487521e-01, 9.69274326e-03),
    "cogvideox": (-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02),
    # Wan2.1 T2V-1.3B, whose signal is the timestep embedding (the wan spec's modulated input).
    "wan": (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01),
}


def rescale(coefficients: Sequence[float], x: float) -> float:
    """The polynomial with ``coefficients`` (highest degree first) at ``x``, as numpy.poly1d does."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return value


@register_policy("teacache")
@dataclass(eq=False, repr=False)
class TeaCache(CachePolicy, Forecasts):
    """Skip while the accumulated rescaled relative L1 change of the first block's modulated input
    stays below ``threshold``. First and last steps always compute. Signal: that accumulated change,
    the sum up to and including this call (``None`` on the first and last steps).

    ``coefficients`` default to the model's calibration (``cachelab.calibration``): the published ones
    of its family unless numbers measured on the model are given; the executor fills them in at attach time.
    """
    parity = "none: no peer implementation (not in diffusers); decisions follow the published rule (tests/test_policies.py)"

    signals = ("modulated_input",)
    uses_threshold = True
    calibrated = ("coefficients",)
    published = {family: {"coefficients": list(values)} for family, values in PUBLISHED_COEFFICIENTS.items()}

    threshold: float = 0.4
    coefficients: Sequence[float] | None = None
    tune_knob = threshold_knob()  # what cachelab.tune searches

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        if self.coefficients is not None:
            self.coefficients = [float(c) for c in self.coefficients]
        self.reset()

    def uncalibrated(self, missing, family):
        return (
            f"TeaCache has no published coefficients for the {family} family; pass "
            "TeaCache(coefficients=[...]) (policy.coefficients=[...] on the command line; fit them with "
            "cachelab.calibrate.teacache_coefficients), or coefficients=[1.0, 0.0] for the raw relative change"
        )

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
        accumulated = self.accumulated
        if accumulated < self.threshold:
            return self.skip(ctx, accumulated)
        self.accumulated = 0.0
        return compute(accumulated)
