from .base import CachePolicy, Decision, StepContext, compute
from .registry import register_policy


@register_policy("none")
class NoCache(CachePolicy):
    """Always compute: the uncached baseline."""

    caches = False

    def decide(self, ctx: StepContext) -> Decision:
        return compute()
