"""First Block Cache (ParaAttention; the rule of diffusers' ``FirstBlockCacheConfig``)."""

from .base import CachePolicy, Decision, StepContext, check_number, compute, forecast, relative_l1, reuse
from .registry import register_policy
from .taylor import taylor_weights


@register_policy("first_block")
class FirstBlockCache(CachePolicy):
    """Run block 0; compute the rest when its residual moved more than ``threshold`` (relative L1)
    from the residual of the last computed step. ``taylor_order`` > 0 forecasts the skipped steps'
    residual with a Taylor expansion over the last computed steps instead of reusing the newest."""

    signals = ("head_residual",)
    head_blocks = 1
    uses_threshold = True

    def __init__(self, threshold: float = 0.05, taylor_order: int = 0):
        self.threshold = check_number("threshold", threshold)
        self.taylor_order = check_number("taylor_order", taylor_order, integer=True)
        self.history = taylor_order + 1
        self.reset()

    def params(self):
        return {"threshold": self.threshold, "taylor_order": self.taylor_order}

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
        return reuse(change)
