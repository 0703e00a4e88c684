from dataclasses import dataclass

from .base import CachePolicy, Decision, StepContext, compute
from .registry import register_policy


@register_policy("none")
@dataclass(eq=False, repr=False)
class NoCache(CachePolicy):
    """Always compute: the uncached baseline."""

    caches = False

    def decide(self, ctx: StepContext) -> Decision:
        return compute()
