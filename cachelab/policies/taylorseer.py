"""TaylorSeer (Liu et al., ICCV 2025): fixed-interval decisions, skipped steps forecast by a Taylor expansion."""

from dataclasses import dataclass

from .base import Decision, StepContext, check_number, compute, forecast, reuse
from .fixed_interval import IntervalSchedule
from .registry import register_policy
from .taylor import taylor_weights


@register_policy("taylorseer")
@dataclass(eq=False, repr=False)
class TaylorSeer(IntervalSchedule):
    """Compute the first ``warmup_steps`` steps, every ``interval``-th step after them and the last step;
    forecast the residual of all blocks in between with the Taylor expansion of ``order`` over the last
    ``order + 1`` computed steps (``order=0`` reuses: ``FixedInterval``)."""

    interval: int = 4
    order: int = 1
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("order", self.order, integer=True)

    @property
    def history(self) -> int:
        return self.order + 1

    def decide(self, ctx: StepContext) -> Decision:
        if self.scheduled(ctx):
            return compute()
        if self.order == 0:
            return reuse()
        return forecast(taylor_weights(ctx.computed_steps, ctx.step, self.order))
