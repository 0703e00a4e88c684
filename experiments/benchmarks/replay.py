"""A policy that runs another policy's signals and decide() but answers from a fixed schedule, so that
timings on a model with random weights come from chosen decisions with the policy's real costs."""

from __future__ import annotations

import copy

from cachelab import CachePolicy, compute, forecast, reuse
from cachelab.calibration import numbers_for


class Replayed(CachePolicy):
    """``policy`` with its head/tail blocks, signals and history, whose answer at each step is replaced by
    ``computed[step]``: compute, or stand in for the blocks the way ``policy`` would (its forecast
    weights when it forecasts, else the newest residual)."""

    def __init__(self, policy: CachePolicy, computed: list[bool]):
        if not computed or not computed[0]:
            raise ValueError(f"a replayed schedule must compute step 0, got {computed!r}")
        self.policy, self.computed = policy, list(computed)
        self._copy_structure()

    def _copy_structure(self) -> None:
        for attribute in ("signals", "head_blocks", "tail_blocks", "history", "caches"):
            setattr(self, attribute, getattr(self.policy, attribute))

    def for_model(self, numbers, family) -> "Replayed":
        replayed = copy.copy(self)
        replayed.policy = self.policy.for_model(numbers_for(self.policy, family), family)
        replayed._copy_structure()
        return replayed

    def reset(self) -> None:
        self.policy.reset()

    def decide(self, ctx):
        decision = self.policy.decide(ctx)
        if self.computed[ctx.step]:
            return compute(decision.signal)
        return reuse(decision.signal) if decision.compute or decision.weights is None else forecast(decision.weights, decision.signal)

    def __repr__(self) -> str:
        return f"Replayed({self.policy!r}, computed {sum(self.computed)}/{len(self.computed)})"
