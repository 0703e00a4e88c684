from dataclasses import dataclass

from .base import CachePolicy, Decision, StepContext, compute
from .registry import register_policy


@register_policy("none")
@dataclass(eq=False, repr=False)
class NoCache(CachePolicy):
    """Always compute: the uncached baseline."""
    parity = "the plain pipeline: bitwise-identical output on every family (tests/test_executor.py, tests/test_model_specs.py)"

    caches = False

    def decide(self, ctx: StepContext) -> Decision:
        return compute()
