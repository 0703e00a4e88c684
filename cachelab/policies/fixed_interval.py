"""Fixed-interval caching (FORA / DeepCache style)."""

from dataclasses import dataclass

from ..tune.knobs import interval_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy


class IntervalSchedule(CachePolicy):
    """The schedule of ``FixedInterval`` and ``TaylorSeer``, dataclasses with ``interval`` and ``warmup_steps`` fields."""

    interval: int
    warmup_steps: int
    tune_knob = interval_knob("interval")  # what cachelab.tune searches (fixed_interval's and taylorseer's)

    def __post_init__(self) -> None:
        check_number("interval", self.interval, minimum=1, integer=True)
        check_number("warmup_steps", self.warmup_steps, integer=True)

    def scheduled(self, ctx: StepContext) -> bool:
        """Whether the schedule computes this call: a warm-up step, every ``interval``-th step after them, the last step."""
        after_warmup = ctx.step - self.warmup_steps
        return after_warmup < 0 or after_warmup % self.interval == 0 or ctx.is_last


@register_policy("fixed_interval")
@dataclass(eq=False, repr=False)
class FixedInterval(IntervalSchedule, Forecasts):
    """Compute the first ``warmup_steps`` steps, then every ``interval``-th step, and the last step."""
    parity = "none: no peer implementation; its schedule is checked step by step (tests/test_policies.py)"

    interval: int = 2
    warmup_steps: int = 0

    def decide(self, ctx: StepContext) -> Decision:
        return compute() if self.scheduled(ctx) else self.skip(ctx)
