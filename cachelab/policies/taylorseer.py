"""TaylorSeer (Liu et al., ICCV 2025): fixed-interval decisions, skipped steps forecast by a Taylor expansion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..forecasters import Forecaster, Taylor, TaylorDiffusers, make_forecaster
from .base import RECORDED_WHEN_SET, Decision, Forecasts, StepContext, check_number, compute
from .fixed_interval import IntervalSchedule
from .registry import register_policy

#: Where TaylorSeer decides: once per call for all blocks, or per attention module.
TAYLORSEER_UNITS = ("step", "module")


@register_policy("taylorseer")
@dataclass(eq=False, repr=False)
class TaylorSeer(IntervalSchedule, Forecasts):
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
    parity = ('unit="module": diffusers TaylorSeerCacheConfig, same decisions and images (tests/test_module_policies.py); '
              'unit="step": no peer, order 0 is fixed_interval (tests/test_forecasting.py)')

    interval: int = 4
    order: int = 1
    warmup_steps: int = 0
    unit: str = "step"
    #: None: Taylor (see ``stand_in_rule``); any other forecaster's name replaces it.
    forecaster: Any = field(default=None, kw_only=True, metadata=RECORDED_WHEN_SET)

    roles = ("attn",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("order", self.order, integer=True)
        if self.unit not in TAYLORSEER_UNITS:
            raise ValueError(f"TaylorSeer's unit must be {' or '.join(map(repr, TAYLORSEER_UNITS))}, got {self.unit!r}")

    @property
    def history(self) -> int:
        return self.order + 1

    @property
    def stand_in_rule(self) -> Forecaster:
        """Taylor of ``order`` in the unit's convention (cache-dit's for steps, diffusers' for modules; ``order=0``
        reuses), or the ``forecaster`` named instead, of the same order."""
        rule = self.__dict__.get("_stand_in_rule")
        if rule is None:
            taylor = Taylor if self.unit == "step" else TaylorDiffusers
            if self.forecaster is None:
                rule = make_forecaster("reuse") if self.order == 0 else taylor(self.order)
            elif isinstance(self.forecaster, Forecaster):
                rule = self.forecaster
            else:
                rule = make_forecaster(self.forecaster, max(1, self.order))
            self.__dict__["_stand_in_rule"] = rule
        return rule

    def decide(self, ctx: StepContext) -> Decision:
        if self.unit == "module":
            return self._decide_module(ctx)
        if self.scheduled(ctx):
            return compute()
        return self.skip(ctx)

    def _decide_module(self, ctx: StepContext) -> Decision:
        if not ctx.computed_steps:
            return compute()
        if ctx.step < self.warmup_steps or (ctx.step - self.warmup_steps - 1) % self.interval == 0:
            return compute()
        return self.skip(ctx)


def divided_difference_weights(steps: Sequence[int], target: int, order: int) -> list[float]:
    """diffusers' Taylor factors as weights over the outputs computed at ``steps`` (newest first)."""
    return TaylorDiffusers(order).weights(steps, target)
