"""Fixed-interval caching (FORA / DeepCache style)."""

from .base import CachePolicy, Decision, StepContext, check_number, compute, reuse
from .registry import register_policy


@register_policy("fixed_interval")
class FixedInterval(CachePolicy):
    """Compute the first ``warmup_steps`` steps, then every ``interval``-th step, and the last step."""

    def __init__(self, interval: int = 2, warmup_steps: int = 0):
        self.interval = check_number("interval", interval, minimum=1, integer=True)
        self.warmup_steps = check_number("warmup_steps", warmup_steps, integer=True)

    def params(self):
        return {"interval": self.interval, "warmup_steps": self.warmup_steps}

    def decide(self, ctx: StepContext) -> Decision:
        after_warmup = ctx.step - self.warmup_steps
        if after_warmup < 0 or after_warmup % self.interval == 0 or ctx.is_last:
            return compute()
        return reuse()
