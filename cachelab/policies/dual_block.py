"""DBCache, dual block caching (cache-dit): First Block Cache generalised to Fn head and Bn tail blocks."""

from dataclasses import dataclass

from ..tune.knobs import head_tail_space
from .base import Decision, Forecasts, StepContext, check_number, compute
from .first_block import HeadResidualChange
from .registry import register_policy


def _limit(name: str, value: int) -> int:
    """-1 means unlimited."""
    return check_number(name, value, minimum=-1, integer=True)


@register_policy("dbcache")
@dataclass(eq=False, repr=False)
class DualBlockCache(HeadResidualChange, Forecasts):
    """Run the first ``compute_first`` blocks and compare their residual as First Block Cache does;
    on a reused step, apply the cached residual of the middle blocks and still run the last
    ``compute_last`` blocks. The first ``warmup_steps`` steps compute; at most ``max_cached_steps``
    steps per generation and ``max_continuous_cached_steps`` in a row are reused (-1: no limit).
    Defaults are cache-dit's (F8B0, threshold 0.08, 8 warm-up steps, no limits); with
    ``compute_first=1, compute_last=0, warmup_steps=0`` it is First Block Cache. ``taylor_order`` > 0
    forecasts the middle residual on reused steps, as cache-dit's TaylorSeer calibrator does.
    Signal: as First Block Cache's; ``None`` on the steps that compute without comparing (warm-up, limits)."""
    parity = ("cache-dit 1.5.3 DBCacheConfig, plain, TaylorSeer, FoCa and DMD calibrators: same decisions and images "
              "(tests/test_cachedit_parity.py, tests/test_forecaster_parity.py)")

    threshold: float = 0.08
    compute_first: int = 8
    compute_last: int = 0
    warmup_steps: int = 8
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1
    taylor_order: int = 0
    tune_knob = head_tail_space()  # what cachelab.tune searches: Fn, Bn, warm-up and threshold

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("compute_first", self.compute_first, minimum=1, integer=True)
        check_number("compute_last", self.compute_last, integer=True)
        check_number("warmup_steps", self.warmup_steps, integer=True)
        _limit("max_cached_steps", self.max_cached_steps)
        _limit("max_continuous_cached_steps", self.max_continuous_cached_steps)

    @property
    def head_blocks(self) -> int:
        return self.compute_first

    @property
    def tail_blocks(self) -> int:
        return self.compute_last

    def reset(self) -> None:
        super().reset()
        self.cached_steps = self.continuous_cached_steps = 0

    def _may_reuse(self, step: int) -> bool:
        return (
            step >= self.warmup_steps
            and self.cached_steps != self.max_cached_steps
            and self.continuous_cached_steps != self.max_continuous_cached_steps
        )

    def decide(self, ctx: StepContext) -> Decision:
        if not self._may_reuse(ctx.step):
            self.last_computed_residual = ctx.signals["head_residual"]
            self.continuous_cached_steps = 0
            return compute()
        decision = super().decide(ctx)
        if decision.compute:
            self.continuous_cached_steps = 0
        else:
            self.cached_steps += 1
            self.continuous_cached_steps += 1
        return decision
