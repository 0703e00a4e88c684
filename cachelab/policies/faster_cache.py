"""FasterCache (Lv et al. 2024, arXiv 2410.19355): attention outputs extrapolated from the last two, and with CFG
the unconditional output built from the conditional one."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

from ..tune.knobs import interval_knob
from .base import CachePolicy, Decision, StepContext, UncondFromCond, check_number, compute, forecast
from .pab import OneTimestepPerStep, timestep_range
from .registry import register_policy


@register_policy("faster_cache")
@dataclass(eq=False, repr=False)
class FasterCache(OneTimestepPerStep, CachePolicy):
    """Arguments as diffusers' ``FasterCacheConfig``.

    Attention part: while the scheduler's timestep lies strictly inside ``spatial_attention_timestep_skip_range``,
    each attention module (the ``attn`` role) computes at the steps that are a multiple of
    ``spatial_attention_block_skip_range`` (not the first) and in between returns ``o1 + (o1 - o2) *
    attention_weight`` from its last two outputs o1 (newest) and o2, whether those were computed or themselves
    extrapolated (diffusers keeps every call's output: the executor keeps this policy's stand-ins,
    ``keeps_stand_ins``); with one output kept it returns it. Outside the range it computes; the feed-forwards
    always run. ``attention_weight`` is diffusers' default ``attention_weight_callback`` (0.5 at every step).
    Where diffusers raises (a first step inside the range, nothing kept), cachelab computes.

    CFG part (where the pipeline runs CFG, unless ``is_guidance_distilled``; ``cachelab.guidance``): the
    unconditional pass is skipped at the steps inside ``unconditional_batch_timestep_skip_range`` that are not a
    multiple of ``unconditional_batch_skip_range`` (nor the first); its output is the conditional output plus the
    low- and high-frequency differences kept from the last step both ran, scaled by ``alpha_low_frequency`` /
    ``alpha_high_frequency`` inside their ``*_weight_update_timestep_range``. With CFG, attention is extrapolated
    only at those steps (it computes whenever both branches run), and from the conditional branch's outputs.
    Batched CFG (CogVideoX, SD3) as diffusers; separate CFG calls (Wan, CogView4, HunyuanVideo), where
    diffusers' FasterCache fails, by the same rule with the uncond call built from its step's cond call. Without
    CFG the two settings are the same policy, diffusers' with ``is_guidance_distilled=True``.

    Same decisions and images as diffusers on the digits model and, with batched CFG, on a tiny CogVideoX
    (``tests/test_module_policies.py``). Temporal attention: no supported family has separate temporal blocks; the
    ``temporal_*`` arguments are accepted and match no module, as in diffusers on these models."""
    parity = ("diffusers FasterCacheConfig: same decisions and images on digits, a tiny Wan and a tiny CogVideoX "
              "(tests/test_module_policies.py)")

    spatial_attention_block_skip_range: int = 2
    temporal_attention_block_skip_range: int | None = None
    spatial_attention_timestep_skip_range: tuple[float, float] = (-1, 681)
    temporal_attention_timestep_skip_range: tuple[float, float] = (-1, 681)
    attention_weight: float = 0.5
    unconditional_batch_skip_range: int = 5
    unconditional_batch_timestep_skip_range: tuple[float, float] = (-1, 641)
    low_frequency_weight_update_timestep_range: tuple[float, float] = (99, 901)
    high_frequency_weight_update_timestep_range: tuple[float, float] = (-1, 301)
    alpha_low_frequency: float = 1.1
    alpha_high_frequency: float = 1.1
    is_guidance_distilled: bool = False
    tune_knob = interval_knob("spatial_attention_block_skip_range")  # what cachelab.tune searches

    unit = "module"
    roles = ("attn",)
    history = 2
    keeps_stand_ins = True  # the last two outputs, computed or extrapolated

    def __post_init__(self) -> None:
        check_number("spatial_attention_block_skip_range", self.spatial_attention_block_skip_range, minimum=1,
                     integer=True)
        if self.temporal_attention_block_skip_range is not None:
            check_number("temporal_attention_block_skip_range", self.temporal_attention_block_skip_range, minimum=1,
                         integer=True)
        check_number("unconditional_batch_skip_range", self.unconditional_batch_skip_range, minimum=1, integer=True)
        for name in ("spatial_attention_timestep_skip_range", "temporal_attention_timestep_skip_range",
                     "unconditional_batch_timestep_skip_range", "low_frequency_weight_update_timestep_range",
                     "high_frequency_weight_update_timestep_range"):
            setattr(self, name, timestep_range(name, getattr(self, name)))
        for name in ("attention_weight", "alpha_low_frequency", "alpha_high_frequency"):
            if not isinstance(getattr(self, name), Real) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not isinstance(self.is_guidance_distilled, bool):
            raise ValueError(f"is_guidance_distilled must be true or false, got {self.is_guidance_distilled!r}")

    def uncond_from_cond(self) -> UncondFromCond | None:
        if self.is_guidance_distilled:
            return None
        return UncondFromCond(self.unconditional_batch_skip_range, self.unconditional_batch_timestep_skip_range,
                              self.low_frequency_weight_update_timestep_range,
                              self.high_frequency_weight_update_timestep_range, self.alpha_low_frequency,
                              self.alpha_high_frequency)

    def decide(self, ctx: StepContext) -> Decision:
        low, high = self.spatial_attention_timestep_skip_range
        if not low < self.step_timestep(ctx) < high or not ctx.computed_steps or ctx.uncond_built is False:
            return compute()
        if ctx.step > 0 and ctx.step % self.spatial_attention_block_skip_range == 0:
            return compute()
        return forecast((1 + self.attention_weight, -self.attention_weight))
