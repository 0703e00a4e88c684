"""TaylorSeer (Liu et al., ICCV 2025): fixed-interval decisions, skipped steps forecast by a Taylor expansion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .base import Decision, StepContext, check_number, compute, forecast, reuse
from .fixed_interval import IntervalSchedule
from .registry import register_policy
from .taylor import taylor_weights

#: Where TaylorSeer decides: once per call for all blocks, or per attention module.
TAYLORSEER_UNITS = ("step", "module")


@register_policy("taylorseer")
@dataclass(eq=False, repr=False)
class TaylorSeer(IntervalSchedule):
    """``unit="step"``: compute the first ``warmup_steps`` steps, every ``interval``-th step after them and the
    last step; forecast the residual of all blocks in between with the Taylor expansion of ``order`` over the
    last ``order + 1`` computed steps (``order=0`` reuses: ``FixedInterval``).

    ``unit="module"``: diffusers' ``TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=
    warmup_steps, max_order=order)``, its rule included: every attention module (the ``attn`` role) computes the
    first ``warmup_steps`` steps, then step ``warmup_steps + 1`` and every ``interval``-th step after it (step
    ``warmup_steps`` itself is forecast; no forced last step), and forecasts its own output in between from its
    last ``order + 1`` computed outputs (divided differences from the second computed step on); the rest of each
    block runs. A module with nothing computed yet computes (diffusers raises there: ``warmup_steps=0``). Same
    decisions and outputs as diffusers with ``taylor_factors_dtype=torch.float32`` (its default bfloat16 rounds
    the stored derivatives); diffusers' default module patterns (``^blocks.*attn``, fullmatch) miss attention
    modules named ``attn1`` (Wan, CogView4, LTX, CogVideoX), where it forecasts nothing unless given
    ``cache_identifiers``; cachelab forecasts the model spec's ``attn`` modules of every family."""

    interval: int = 4
    order: int = 1
    warmup_steps: int = 0
    unit: str = "step"

    roles = ("attn",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("order", self.order, integer=True)
        if self.unit not in TAYLORSEER_UNITS:
            raise ValueError(f"TaylorSeer's unit must be {' or '.join(map(repr, TAYLORSEER_UNITS))}, got {self.unit!r}")

    @property
    def history(self) -> int:
        return self.order + 1

    def decide(self, ctx: StepContext) -> Decision:
        if self.unit == "module":
            return self._decide_module(ctx)
        if self.scheduled(ctx):
            return compute()
        if self.order == 0:
            return reuse()
        return forecast(taylor_weights(ctx.computed_steps, ctx.step, self.order))

    def _decide_module(self, ctx: StepContext) -> Decision:
        if not ctx.computed_steps:
            return compute()
        if ctx.step < self.warmup_steps or (ctx.step - self.warmup_steps - 1) % self.interval == 0:
            return compute()
        if self.order == 0:
            return reuse()
        return forecast(divided_difference_weights(ctx.computed_steps, ctx.step, self.order))


def divided_difference_weights(steps: Sequence[int], target: int, order: int) -> list[float]:
    """The Taylor forecast of step ``target`` over the outputs computed at ``steps`` (newest first) as weights:
    on every computed step D_0 = F and D_(i+1) = (D_i - D_i at the previous computed step) / (their distance),
    for every order the previous computed step has (diffusers' ``TaylorSeerState``); the forecast at distance
    d from the newest computed step is sum_i D_i d^i / i!."""
    steps = list(steps)[: order + 1]
    count = len(steps)
    older: list[np.ndarray] = []  # D_i at the previous computed step, as weights over the outputs
    for k in reversed(range(count)):
        ladder = [np.eye(count)[k]]
        for i in range(min(order, len(older))):
            ladder.append((ladder[i] - older[i]) / (steps[k] - steps[k + 1]))
        older = ladder
    distance = target - steps[0]
    return [float(w) for w in sum(term * distance**i / math.factorial(i) for i, term in enumerate(older))]
