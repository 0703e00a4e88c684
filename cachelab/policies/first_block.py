"""First Block Cache (ParaAttention; the rule of diffusers' ``FirstBlockCacheConfig``)."""

from dataclasses import dataclass
from typing import ClassVar

from ..tune.knobs import threshold_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute, forecast, relative_l1
from .registry import register_policy
from .taylor import taylor_weights


class HeadResidualChange(CachePolicy):
    """The rule of ``FirstBlockCache`` and ``DualBlockCache``, dataclasses with ``threshold`` and
    ``taylor_order`` fields. Signal: the relative L1 change of the head blocks' residual since the last
    computed step, compared with ``threshold``."""

    signals = ("head_residual",)
    uses_threshold = True
    threshold: float
    taylor_order: int

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        check_number("taylor_order", self.taylor_order, integer=True)
        self.reset()

    @property
    def history(self) -> int:
        return self.taylor_order + 1

    def reset(self) -> None:
        self.last_computed_residual = None

    def decide(self, ctx: StepContext) -> Decision:
        residual = ctx.signals["head_residual"]
        previous = self.last_computed_residual
        if previous is None:
            self.last_computed_residual = residual
            return compute()
        change = relative_l1(residual, previous)
        if change > self.threshold:
            self.last_computed_residual = residual
            return compute(change)
        if self.taylor_order:
            return forecast(taylor_weights(ctx.computed_steps, ctx.step, self.taylor_order), change)
        return self.skip(ctx, change)


@register_policy("first_block")
@dataclass(eq=False, repr=False)
class FirstBlockCache(HeadResidualChange, Forecasts):
    """Run block 0; compute the rest when its residual moved more than ``threshold`` (relative L1)
    from the residual of the last computed step. ``taylor_order`` > 0 forecasts the skipped steps'
    residual with a Taylor expansion over the last computed steps instead of reusing the newest."""
    parity = "diffusers FirstBlockCacheConfig: same decisions and images (tests/test_diffusers_parity.py)"

    head_blocks = 1
    threshold: float = 0.05
    taylor_order: int = 0
    #: ``python -m cachelab policy=first_block`` starts from 0.1 (diffusers' default 0.05 stays the class's).
    cli_defaults: ClassVar[dict] = {"threshold": 0.1}
    tune_knob = threshold_knob()  # what cachelab.tune searches
