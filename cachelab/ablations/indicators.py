"""Indicators for TeaCache's ablation: accumulate a per-step change, compute once the sum reaches the threshold.

TeaCache (`teacache`) accumulates the polynomial-rescaled change of the first block's modulated input;
with ``coefficients=[1.0, 0.0]`` it accumulates the raw change. The two policies here keep TeaCache's
rule (first and last steps compute; ``accumulated < threshold`` reuses, else compute and restart the sum)
and change only what is accumulated:

- ``timestep_embedding_change``: the relative L1 change of the sinusoidal timestep embedding (the input
  of the model's timestep MLP, as FLUX computes it: 256 channels of ``timestep_scale`` x the timestep);
  it depends on the schedule alone, so every prompt gets the same decisions.
- ``uncached_residual_change``: the relative L1 change, between consecutive steps of an uncached
  rehearsal of the same prompt and seed, of the residual of all blocks (what a reused step stands in
  for): the indicator TeaCache's rescaled input change tries to predict. It knows the uncached result,
  so it is a bound, not a deployable policy.

A config selects them with ``policy.module=cachelab.ablations.indicators``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.embeddings import get_timestep_embedding

from ..policies.base import CachePolicy, Decision, StepContext, check_number, compute, relative_l1, reuse
from ..policies.registry import register_policy


@dataclass(eq=False, repr=False)
class AccumulatedChange(CachePolicy):
    """TeaCache's rule over ``change(ctx)``: the change of some quantity since the previous step.
    Signal: the accumulated change compared with ``threshold`` (``None`` on the first and last steps)."""

    uses_threshold = True

    threshold: float = 0.1

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        self.reset()

    def reset(self) -> None:
        self.accumulated = 0.0

    def change(self, ctx: StepContext) -> float | None:
        """The change since the previous step (None when there is no previous step)."""
        raise NotImplementedError

    def decide(self, ctx: StepContext) -> Decision:
        change = self.change(ctx)
        if change is None or ctx.is_first or ctx.is_last:
            self.accumulated = 0.0
            return compute()
        self.accumulated += change
        accumulated = self.accumulated
        if accumulated < self.threshold:
            return reuse(accumulated)
        self.accumulated = 0.0
        return compute(accumulated)


@register_policy("timestep_embedding_change")
@dataclass(eq=False, repr=False)
class TimestepEmbeddingChange(AccumulatedChange):
    """Accumulates the relative L1 change of the sinusoidal embedding of ``timestep_scale`` x the timestep."""

    timestep_scale: float = 1000.0
    channels: int = 256

    def __post_init__(self) -> None:
        check_number("timestep_scale", self.timestep_scale)
        check_number("channels", self.channels, minimum=2, integer=True)
        super().__post_init__()

    def reset(self) -> None:
        super().reset()
        self.previous = None

    def embedding(self, timestep: float) -> torch.Tensor:
        """The sinusoidal embedding of ``timestep_scale`` x ``timestep`` (what the transformer is called with)."""
        scaled = torch.tensor([float(timestep) * self.timestep_scale], dtype=torch.float64)
        return get_timestep_embedding(scaled, self.channels, flip_sin_to_cos=True, downscale_freq_shift=0)

    def change(self, ctx: StepContext) -> float | None:
        current = self.embedding(ctx.timestep)
        previous, self.previous = self.previous, current
        return None if previous is None else relative_l1(current, previous)


@register_policy("uncached_residual_change")
@dataclass(eq=False, repr=False)
class UncachedResidualChange(AccumulatedChange):
    """Accumulates the relative L1 change of the residual of all blocks between consecutive steps of an
    uncached rehearsal of the same generation (``executor.rehearse``; `python -m cachelab` rehearses)."""

    rehearses = True
    bound = True

    changes: dict[str, list[float | None]] = field(default_factory=dict, init=False)

    def plan(self, residuals) -> None:
        self.changes = {branch: [None] + [relative_l1(current, previous) for previous, current in zip(steps, steps[1:])]
                        for branch, steps in residuals.items()}

    def change(self, ctx: StepContext) -> float | None:
        changes = self.changes.get(ctx.branch)
        if changes is None:
            raise RuntimeError(f"{self!r} has no rehearsal of branch {ctx.branch!r}: rehearse the same generation "
                               "first (executor.rehearse(lambda: pipe(...)); python -m cachelab does it)")
        return changes[ctx.step] if ctx.step < len(changes) else None
