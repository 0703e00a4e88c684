"""FasterCache (Lv et al. 2024, arXiv 2410.19355), its attention part: attention outputs extrapolated from the last two."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

from .base import CachePolicy, Decision, StepContext, check_number, compute, forecast
from .pab import OneTimestepPerStep, timestep_range
from .registry import register_policy


@register_policy("faster_cache")
@dataclass(eq=False, repr=False)
class FasterCache(OneTimestepPerStep, CachePolicy):
    """Arguments as diffusers' ``FasterCacheConfig``; its attention part, which is diffusers' FasterCache with
    ``is_guidance_distilled=True``. While the scheduler's timestep lies strictly inside
    ``spatial_attention_timestep_skip_range``, each attention module (the ``attn`` role) computes at the steps
    that are a multiple of ``spatial_attention_block_skip_range`` (not the first) and in between returns
    ``o1 + (o1 - o2) * attention_weight`` from its last two outputs o1 (newest) and o2, whether those were
    computed or themselves extrapolated (diffusers keeps every call's output: the executor keeps this policy's
    stand-ins, ``keeps_stand_ins``); with one output kept it returns it. Outside the range it computes; the
    feed-forwards always run. ``attention_weight`` is diffusers' default ``attention_weight_callback`` (0.5 at
    every step). Where diffusers raises (a first step inside the range, nothing kept), cachelab computes.

    Same decisions and images as diffusers on the digits model (``tests/test_module_policies.py``). Temporal
    attention: no supported family has separate temporal blocks; the ``temporal_*`` arguments are accepted and
    match no module, as in diffusers on these models. With CFG in separate calls each branch is extrapolated
    from its own outputs. Not implemented: the CFG part (the unconditional output approximated from the
    conditional one plus low/high-frequency differences kept from the last full CFG step); it needs a
    transformer-level stand-in built from the other branch's output of the same step."""

    spatial_attention_block_skip_range: int = 2
    temporal_attention_block_skip_range: int | None = None
    spatial_attention_timestep_skip_range: tuple[float, float] = (-1, 681)
    temporal_attention_timestep_skip_range: tuple[float, float] = (-1, 681)
    attention_weight: float = 0.5

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
        for name in ("spatial_attention_timestep_skip_range", "temporal_attention_timestep_skip_range"):
            setattr(self, name, timestep_range(name, getattr(self, name)))
        if not isinstance(self.attention_weight, Real) or isinstance(self.attention_weight, bool):
            raise ValueError(f"attention_weight must be a number, got {self.attention_weight!r}")

    def decide(self, ctx: StepContext) -> Decision:
        low, high = self.spatial_attention_timestep_skip_range
        if not low < self.step_timestep(ctx) < high or not ctx.computed_steps:
            return compute()
        if ctx.step > 0 and ctx.step % self.spatial_attention_block_skip_range == 0:
            return compute()
        return forecast((1 + self.attention_weight, -self.attention_weight))
