"""SeaCache (arXiv 2602.18993; diffusers ``SeaCacheConfig``, ``hooks/sea_cache.py``): accumulate the change of a
spectrally filtered view of the transformer's input latents; forecast the residual of all blocks to first order.

The SEA (spectral-evolution-aware) filter, as diffusers 0.42 applies it to Wan text-to-video latents: an FFT over
frames, rows and columns of each video's latents (all channels), multiplied by the product over the three axes of
the Wiener gain ``g(f) = s P(f) / (s^2 P(f) + n^2)`` with the clean-signal prior ``P(f) = 1 / |f|^power_exp``,
``s = 1 - sigma``, ``n = sigma``, divided by the mean gain, back to the signal domain (real part).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..tune.knobs import threshold_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute, forecast, register_call_signal
from .registry import register_policy

#: Wan's transformer takes timestep = sigma * num_train_timesteps (1000) of the flow-matching schedule.
TIMESTEP_SCALE = 1000.0
#: The prior's exponent that SeaCache uses for video features, and the one of the ``sea_indicator`` signal.
VIDEO_POWER_EXP = 3.0
_SIGMA_MARGIN = 1e-6  # sigma is kept inside (0, 1), as diffusers does
_EPS = 1e-16


def sea_filter(latents: torch.Tensor, sigma: float, power_exp: float) -> torch.Tensor:
    """Latents (B, C, T, H, W) filtered over T, H, W by the SEA gain at noise level `sigma`; float32."""
    if latents.ndim != 5:
        raise ValueError(f"the SEA filter needs video latents (B, C, T, H, W), got shape {tuple(latents.shape)}")
    sigma = min(max(sigma, _SIGMA_MARGIN), 1.0 - _SIGMA_MARGIN)
    signal, noise = 1.0 - sigma, sigma
    axes = (2, 3, 4)
    gain = torch.ones((), device=latents.device)
    for axis in axes:
        prior = 1.0 / (torch.fft.fftfreq(latents.shape[axis], device=latents.device).abs() ** power_exp + _EPS)
        axis_gain = signal * prior / (signal**2 * prior + noise**2 + _EPS)
        shape = [1] * latents.ndim
        shape[axis] = -1
        gain = gain * axis_gain.reshape(shape)
    mean = gain.mean()
    if torch.isfinite(mean) and mean > 0:
        gain = gain / mean
    spectrum = torch.fft.fftn(latents.float(), dim=axes)
    return torch.fft.ifftn(spectrum * gain, dim=axes).real


def sea_indicator_of(transformer, arguments, power_exp: float = VIDEO_POWER_EXP) -> torch.Tensor:
    """The SEA indicator of a Wan transformer call: its ``hidden_states`` latents filtered at the scheduler's sigma,
    as the pipeline's ``cache_context`` says it (diffusers' SeaCache reads the same); where the pipeline does not
    say it, at the sigma the ``timestep`` encodes (timestep / 1000: exact for FlowMatchEulerDiscreteScheduler,
    rounded where the scheduler rounds its timesteps, as UniPC does)."""
    latents, timestep = arguments["hidden_states"], arguments["timestep"]
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"sea_indicator needs video latents (B, C, T, H, W) as hidden_states, as Wan's "
                         f"transformer takes; got {shape}")
    sigma = arguments.loop.get("sigma")
    if sigma is None:
        sigma = float(torch.as_tensor(timestep).flatten()[0]) / TIMESTEP_SCALE
    return sea_filter(latents.detach(), sigma, power_exp)


register_call_signal("sea_indicator")(sea_indicator_of)


def indicator_signal(power_exp: float) -> str:
    """The call signal's name for a prior exponent (registered on first use): ``sea_indicator`` for 3.0."""
    if power_exp == VIDEO_POWER_EXP:
        return "sea_indicator"
    name = f"sea_indicator_p{power_exp:g}"
    register_call_signal(name)(lambda transformer, arguments: sea_indicator_of(transformer, arguments, power_exp))
    return name


def mean_relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous| of every video in the batch, averaged over the batch."""
    dims = tuple(range(1, current.ndim))
    per_video = (current - previous).abs().mean(dim=dims) / (previous.abs().mean(dim=dims) + _EPS)
    return float(per_video.mean())


@register_policy("seacache")
@dataclass(eq=False, repr=False)
class SeaCache(CachePolicy, Forecasts):
    """Skip while the accumulated relative L1 change of the SEA indicator stays below ``threshold``; compute the
    first ``retention_steps`` and last ``cache_end_steps`` steps and after ``max_consecutive_cached`` skips in a row
    (0: no limit). A skipped step reuses the residual of all blocks (``residual_order=0``) or extrapolates it
    linearly from the last two computed steps (``residual_order=1``). Signal: the accumulated change including
    this call (``None`` where the step is forced). Arguments and defaults are diffusers' ``SeaCacheConfig``'s."""
    parity = "diffusers SeaCacheConfig: same decisions and videos on video_digits and a tiny Wan (tests/test_seacache.py)"

    uses_threshold = True

    threshold: float = 0.25
    residual_order: int = 1
    retention_steps: int = 1
    cache_end_steps: int = 1
    max_consecutive_cached: int = 2
    power_exp: float = VIDEO_POWER_EXP
    tune_knob = threshold_knob()  # what cachelab.tune searches

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        if self.residual_order not in (0, 1):
            raise ValueError(f"residual_order must be 0 or 1, got {self.residual_order!r}")
        check_number("retention_steps", self.retention_steps, integer=True)
        check_number("cache_end_steps", self.cache_end_steps, integer=True)
        check_number("max_consecutive_cached", self.max_consecutive_cached, integer=True)
        check_number("power_exp", self.power_exp)
        if self.power_exp <= 0:
            raise ValueError(f"power_exp must be a number > 0, got {self.power_exp!r}")
        self._signal = indicator_signal(float(self.power_exp))
        self.reset()

    @property
    def signals(self) -> tuple[str, ...]:
        return (self._signal,)

    @property
    def history(self) -> int:
        return self.residual_order + 1

    def reset(self) -> None:
        self.previous = None
        self.accumulated = 0.0
        self.consecutive_cached = 0

    def _forced(self, ctx: StepContext) -> bool:
        at_end = ctx.num_steps is not None and ctx.step >= ctx.num_steps - self.cache_end_steps
        too_many = bool(self.max_consecutive_cached) and self.consecutive_cached >= self.max_consecutive_cached
        return ctx.step < self.retention_steps or at_end or self.previous is None or too_many

    def decide(self, ctx: StepContext) -> Decision:
        indicator = ctx.signals[self._signal]
        previous, self.previous = self.previous, indicator
        if self._forced(ctx) or previous is None:  # a copy that starts mid-generation (a second expert) too
            return self._compute(None)
        accumulated = self.accumulated + mean_relative_l1(indicator, previous)
        if accumulated >= self.threshold or not ctx.computed_steps:
            return self._compute(accumulated)
        self.accumulated = accumulated
        self.consecutive_cached += 1
        return self._stand_in(ctx, accumulated)

    def _compute(self, signal: float | None) -> Decision:
        self.accumulated = 0.0
        self.consecutive_cached = 0
        return compute(signal)

    def _stand_in(self, ctx: StepContext, signal: float) -> Decision:
        steps = ctx.computed_steps
        if self.residual_order == 0 or len(steps) < 2:
            return self.skip(ctx, signal)
        scale = (ctx.step - steps[0]) / (steps[0] - steps[1])
        return forecast((1.0 + scale, -scale), signal)
