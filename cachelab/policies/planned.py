"""Policies that follow a plan of computed steps and forecast weights (``cachelab.schedules.Plan``)."""

from __future__ import annotations

from .base import CachePolicy, Decision, StepContext, compute, forecast


def follow(plan, policy: CachePolicy, ctx: StepContext) -> Decision:
    """Compute the plan's computed steps; forecast every other step with its weights."""
    if ctx.num_steps is not None and ctx.num_steps != plan.steps:
        raise ValueError(
            f"{policy!r} follows a plan for {plan.steps} steps; this generation has {ctx.num_steps}: "
            f"run it with steps={plan.steps}, or plan/calibrate again for {ctx.num_steps} steps"
        )
    if ctx.step in plan.weights:
        return forecast(plan.weights[ctx.step])
    return compute()
