"""TaylorSeer (Liu et al., ICCV 2025): fixed-interval decisions, skipped steps forecast by a Taylor expansion."""

from .base import Decision, StepContext, check_number, forecast
from .fixed_interval import FixedInterval
from .registry import register_policy
from .taylor import taylor_weights


@register_policy("taylorseer")
class TaylorSeer(FixedInterval):
    """Compute the first ``warmup_steps`` steps, every ``interval``-th step after them and the last step;
    forecast the residual of all blocks in between with the Taylor expansion of ``order`` over the last
    ``order + 1`` computed steps (``order=0`` reuses: ``FixedInterval``)."""

    def __init__(self, interval: int = 4, order: int = 1, warmup_steps: int = 0):
        super().__init__(interval, warmup_steps)
        self.order = check_number("order", order, integer=True)
        self.history = order + 1

    def params(self):
        return {**super().params(), "order": self.order}

    def decide(self, ctx: StepContext) -> Decision:
        decision = super().decide(ctx)
        if decision.compute or self.order == 0:
            return decision
        return forecast(taylor_weights(ctx.computed_steps, ctx.step, self.order))
