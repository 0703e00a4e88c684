"""SenCache (Haghighi & Alahi, arXiv 2602.24208; reference code github.com/vita-epfl/SenCache): reuse while the
denoiser's first-order sensitivity predicts a small change of its output.

The rule, as the paper and its Wan2.1 code apply it: at a computed step keep its latent x_c and timestep t_c and the
model's sensitivities there, alpha_x = ||J_x|| and alpha_t = ||J_t|| (the calibrated values at the timestep nearest
t_c). At a later step, with the latent x and timestep t, the predicted output change is
alpha_x * ||x - x_c|| + alpha_t * |t - t_c|; reuse while it is below epsilon and fewer than ``max_consecutive`` steps
in a row were reused (the reference's K = 10; the paper's ablation prefers about 3); the first and last steps compute;
the first 20% of the steps use a stricter ``early_threshold`` (the reference: 0.005 early, 0.07 after, before its
scaling by the latent size). Sensitivities are finite differences along uncached generations: alpha_x at step s is
||f(x_{s+1}, t_s) - f(x_s, t_s)|| / ||x_{s+1} - x_s||, alpha_t is ||f(x_s, t_{s+1}) - f(x_s, t_s)|| / |t_{s+1} - t_s|
(``cachelab.calibrate.sencache_sensitivities``).

Units here: norms are root-mean-square (||v|| / sqrt(size)), so epsilon is in units of the output's RMS whatever the
latent size (the reference scales its thresholds by a constant for Wan's latent instead); t is the scheduler's
timestep / 1000 (the sigma of flow-matching schedules). The stand-in is the residual of all blocks of the last
computed step (or the ``forecaster``), as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..engine import parallel
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy

#: The share of the steps (from the first) that use ``early_threshold`` (the reference: 20%).
EARLY_SHARE = 0.2


def rms(tensor: torch.Tensor) -> float:
    """sqrt(mean(tensor^2)); under context parallelism over every rank's shard."""
    if not parallel.reducing():
        return tensor.float().pow(2).mean().sqrt().item()
    sums = parallel.reduce_sums(torch.stack([tensor.double().pow(2).sum(), torch.tensor(float(tensor.numel()), dtype=torch.float64)]))
    return float((sums[0] / sums[1]).sqrt())


@register_policy("sencache")
@dataclass(eq=False, repr=False)
class SenCache(CachePolicy, Forecasts):
    """Reuse the residual of all blocks while alpha_x * ||x - x_c|| + alpha_t * |t - t_c| < ``threshold`` (epsilon;
    ``early_threshold`` in the first 20% of the steps) and fewer than ``max_consecutive`` steps in a row were reused;
    x_c, t_c: the latent and timestep of the last computed step, alpha_x, alpha_t: the calibrated sensitivities at
    the timestep nearest t_c (RMS norms, t = scheduler timestep / 1000). The first and last steps compute.
    ``sensitivities`` ({"timesteps", "alpha_x", "alpha_t"}) default to the model's calibration. Signal: the
    predicted change (``None`` on the first and last steps)."""
    parity = "none: no peer implementation; decisions follow the paper's rule by hand (tests/test_sencache.py)"

    signals = ("call_input",)
    uses_threshold = True
    calibrated = ("sensitivities",)

    threshold: float = 0.1
    early_threshold: float = 0.01
    max_consecutive: int = 10
    sensitivities: dict | None = None

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        check_number("early_threshold", self.early_threshold)
        check_number("max_consecutive", self.max_consecutive, minimum=1, integer=True)
        self.reset()

    @classmethod
    def tune_knob(cls, steps: int, blocks: int) -> tuple[str, tuple]:
        """The knob ``cachelab.tune`` should search and its values, safest first: epsilon."""
        from ..tune.knobs import THRESHOLDS

        return "threshold", THRESHOLDS

    def uncalibrated(self, missing, family):
        return (f"SenCache has no sensitivities for this {family} model; measure them with "
                "cachelab.calibrate.sencache_sensitivities(pipe, prompts) and pass SenCache(sensitivities=...) or "
                "calibration_file=<a calibration.json with them under policies.sencache>")

    def reset(self) -> None:
        self.cached: tuple[torch.Tensor, float, float, float] | None = None  # x_c, t_c, alpha_x, alpha_t
        self.reused_in_a_row = 0

    def sensitivity_at(self, t: float) -> tuple[float, float]:
        """(alpha_x, alpha_t) at the calibrated timestep nearest ``t``."""
        timesteps = np.asarray(self.sensitivities["timesteps"], dtype=np.float64)
        index = int(np.argmin(np.abs(timesteps - t)))
        return float(self.sensitivities["alpha_x"][index]), float(self.sensitivities["alpha_t"][index])

    def decide(self, ctx: StepContext) -> Decision:
        x = ctx.signals["call_input"]
        scheduler_timestep = ctx.scheduler_timestep
        if scheduler_timestep is None:
            raise ValueError("SenCache needs the call's timestep")
        t = scheduler_timestep / 1000.0
        if self.cached is not None and ctx.step > 0 and not ctx.is_last:
            cached_x, cached_t, alpha_x, alpha_t = self.cached
            change = alpha_x * rms(x - cached_x) + alpha_t * abs(t - cached_t)
            early = ctx.num_steps is not None and ctx.step < int(round(ctx.num_steps * EARLY_SHARE))
            if change < (self.early_threshold if early else self.threshold) and self.reused_in_a_row < self.max_consecutive:
                self.reused_in_a_row += 1
                return self.skip(ctx, change)
        else:
            change = None
        self.reused_in_a_row = 0
        self.cached = (x, t, *self.sensitivity_at(t))
        return compute(change)
