"""Per-block learned schedules: every block computes its own steps and forecasts its own residual at the
others, with least-squares weights fitted on uncached calibration generations, the budget of block work
shared out among the blocks where it lowers the forecast error most.

For each block, a dynamic programme over its residuals' Gram matrix (``cachelab.schedules``) gives the
least summed squared forecast error E_b(k) of computing k of its steps, for every k. The blocks' step
counts then grow one at a time, always where the error falls most per second of block work, until the
block work of ``budget`` whole-transformer steps is spent.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .. import parallel
from ..executor import attach, detach
from ..policies.base import CachePolicy, Decision, StepContext, compute
from ..policies.learned import Learned
from ..schedules import Plan, best_plans, estimator, gram


class _EveryBlock(CachePolicy):
    """A block-unit policy that computes everything: the executor records each block's residuals."""

    unit = "block"
    caches = False

    def decide(self, ctx: StepContext) -> Decision:
        return compute()


def block_grams(pipe, prompts, **call_kwargs) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per block unit: the Gram matrix of its residuals over the steps (summed over generations and CFG
    branches), and its measured seconds per computed call."""
    executor = attach(pipe, _EveryBlock())
    grams: dict[str, np.ndarray] = defaultdict(lambda: 0.0)
    try:
        with parallel.reducing_over(parallel.group_of(pipe.transformer)):
            for prompt in prompts:
                for units in executor.rehearse(lambda: pipe(prompt, **call_kwargs)).values():
                    for unit, residuals in units.items():
                        grams[unit] = grams[unit] + gram(residuals)
    finally:
        detach(pipe)
    return dict(grams), {unit: executor.costs.of(unit) for unit in grams}


def share_budget(errors: dict[str, list[float]], costs: dict[str, float], budget: int) -> dict[str, int]:
    """Computed steps per block: from 1 each, add a step where the error falls most per unit of cost while
    the block work stays within ``budget`` steps of all blocks. ``errors[unit][k - 1]`` = E(k)."""
    counts = {unit: 1 for unit in errors}
    spent, allowed = sum(costs.values()), budget * sum(costs.values())
    while True:
        gains = {unit: (errors[unit][k - 1] - errors[unit][k]) / costs[unit]
                 for unit, k in counts.items() if k < len(errors[unit]) and spent + costs[unit] <= allowed * (1 + 1e-9)}
        if not gains:
            return counts
        unit = max(gains, key=gains.get)
        counts[unit] += 1
        spent += costs[unit]


def learned_block_plans(pipe, prompts, budgets, history: int = 2, **call_kwargs) -> dict[int, dict[str, Plan]]:
    """For each budget (whole-transformer step equivalents of block work), every block's plan."""
    grams, costs = block_grams(pipe, prompts, **call_kwargs)
    steps = len(next(iter(grams.values())))
    plans = {unit: best_plans(g, list(range(1, steps + 1)), estimator("fitted", history, g), history)
             for unit, g in grams.items()}
    errors = {unit: [plans[unit][k].error for k in range(1, steps + 1)] for unit in grams}
    shares = {budget: share_budget(errors, costs, budget) for budget in budgets}
    return {budget: {unit: plans[unit][k] for unit, k in share.items()} for budget, share in shares.items()}


def learned_block_policy(pipe, prompts, budget: int, history: int = 2, **call_kwargs) -> Learned:
    """A ready per-block ``Learned`` policy (``unit="block"``) for ``pipe``, calibrated on ``prompts``."""
    plans = learned_block_plans(pipe, prompts, [budget], history, **call_kwargs)
    return Learned(budget, unit="block", block_plans=plans)
