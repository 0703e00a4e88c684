"""Dynamic Block Prune (the rule of cache-dit's ``DBPruneConfig``): each block is skipped on its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..tune.knobs import threshold_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute, relative_l1
from .registry import register_policy

_DYNAMIC_DIFFS = 5  # the dynamic threshold averages the first diffs of the step (cache-dit's choice)


@register_policy("dbprune")
@dataclass(eq=False, repr=False)
class DBPrune(CachePolicy, Forecasts):
    """Per block: skip it (add its residual from its last computed step) when its input moved less than
    ``threshold`` (relative L1) from its input at that step. The first ``compute_first`` and last
    ``compute_last`` blocks and ``non_prune_blocks`` always run; so does every block in the first
    ``warmup_steps`` steps. With ``dynamic_threshold`` a block's threshold rises to ``dynamic_relax_ratio``
    x the mean of the first changes compared at this step (earlier blocks), while that stays below
    ``max_dynamic_threshold`` (default 2 x ``threshold``). Defaults are cache-dit's. Signal: the block's
    input change, where it was compared."""
    parity = "cache-dit 1.5.3 DBPruneConfig: same pruned blocks, changes and images (tests/test_dbprune.py)"

    unit = "block"
    signals = ("block_input",)
    uses_threshold = True

    threshold: float = 0.08
    compute_first: int = 8
    compute_last: int = 0
    warmup_steps: int = 8
    non_prune_blocks: list[int] = field(default_factory=list)
    dynamic_threshold: bool = False
    max_dynamic_threshold: float | None = None
    dynamic_relax_ratio: float = 1.25
    tune_knob = threshold_knob()  # what cachelab.tune searches

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        check_number("compute_first", self.compute_first, integer=True)
        check_number("compute_last", self.compute_last, integer=True)
        check_number("warmup_steps", self.warmup_steps, integer=True)
        check_number("dynamic_relax_ratio", self.dynamic_relax_ratio)
        if self.max_dynamic_threshold is not None:
            check_number("max_dynamic_threshold", self.max_dynamic_threshold)
        self.non_prune_blocks = [check_number("non_prune_blocks entry", b, integer=True) for b in self.non_prune_blocks]
        self.reset()

    def reset(self) -> None:
        self.inputs = {}  # unit -> the block's input at its last computed step
        self.changes = {}  # step -> the changes compared so far at that step, in block order

    def protected(self, block: int, blocks: int) -> bool:
        return block < self.compute_first or block >= blocks - self.compute_last or block in self.non_prune_blocks

    def decide(self, ctx: StepContext) -> Decision:
        if self.protected(ctx.block, ctx.num_blocks):
            return compute()
        current, previous = ctx.signals["block_input"], self.inputs.get(ctx.unit)
        if ctx.step < self.warmup_steps or previous is None:
            self.inputs[ctx.unit] = current
            return compute()
        threshold = self.step_threshold(ctx.step)
        change = relative_l1(current, previous)
        self.changes.setdefault(ctx.step, []).append(change)
        if change < threshold:
            return self.skip(ctx, change)
        self.inputs[ctx.unit] = current
        return compute(change)

    def step_threshold(self, step: int) -> float:
        earlier = [c for c in self.changes.get(step, [])[:_DYNAMIC_DIFFS] if c > 0]
        if not (self.dynamic_threshold and earlier):
            return self.threshold
        relaxed = self.dynamic_relax_ratio * sum(earlier) / len(earlier)
        ceiling = 2 * self.threshold if self.max_dynamic_threshold is None else self.max_dynamic_threshold
        return max(relaxed, self.threshold) if relaxed < ceiling else self.threshold
