"""First Block Cache (ParaAttention; the rule of diffusers' ``FirstBlockCacheConfig``)."""

from .base import CachePolicy, Decision, StepContext, check_number, compute, relative_l1, reuse
from .registry import register_policy


@register_policy("first_block")
class FirstBlockCache(CachePolicy):
    """Run block 0; compute the rest when its residual moved more than ``threshold`` (relative L1)
    from the residual of the last computed step."""

    signals = ("head_residual",)
    head_blocks = 1
    uses_threshold = True

    def __init__(self, threshold: float = 0.05):
        self.threshold = check_number("threshold", threshold)
        self.reset()

    def params(self):
        return {"threshold": self.threshold}

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
        return reuse(change)
