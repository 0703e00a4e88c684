"""Fit the learned policy (the idea of L2P, arXiv 2604.26365) on uncached generations.

The Gram matrix of the residual of all blocks between every pair of steps, summed over the
generations, gives each skipped step's least-squares forecast weights over the last computed residuals
and, by a dynamic programme, the schedule whose forecasts err least (``cachelab.schedules``). With
``refine``, a local search then moves one computed step at a time (six moves at most) while that lowers
the error of the cached images against the uncached ones of the same calibration generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine import parallel
from ..engine.attach import attach, detach
from ..policies.learned import Learned
from ..policies.no_cache import NoCache
from ..runner import samples
from ..schedules import Plan, best_plan, estimator, gram, plan_for


@dataclass
class UncachedRuns:
    """Calibration generations: their summed residual Gram matrix, and how to replay each one."""

    gram: np.ndarray
    replays: list[Callable[[], dict | None]]
    outputs: list[np.ndarray]


def uncached_runs(pipe, prompts, **call_kwargs) -> UncachedRuns:
    """One uncached generation per prompt, each branch's residuals summed into one Gram matrix."""
    executor = attach(pipe, NoCache())
    total, replays, outputs = None, [], []
    try:
        with parallel.reducing_over(parallel.group_of(pipe.transformer)):  # each rank's Gram covers its shard only
            for prompt in prompts:
                replays.append(_replayable(dict(prompt=prompt, **call_kwargs)))
                output = []
                for steps in executor.rehearse(lambda: output.append(pipe(prompt, **call_kwargs))).values():
                    total = gram(steps) if total is None else total + gram(steps)
                outputs.append(samples(output[0]))
    finally:
        detach(pipe)
    return UncachedRuns(total, replays, outputs)


def _replayable(kwargs: dict) -> Callable[[], dict]:
    """The call's arguments again, with a generator in the state it has now (before the call draws)."""
    generator = kwargs.get("generator")
    if not isinstance(generator, torch.Generator):
        return lambda: None
    state = generator.get_state()

    def replay() -> dict:
        fresh = torch.Generator(generator.device)
        fresh.set_state(state)
        return {**kwargs, "generator": fresh}

    return replay


def refine_plan(pipe, runs: UncachedRuns, plan: Plan, history: int, moves: int = 6) -> Plan:
    """Move one computed step (not step 0) by one step at a time, keeping the move that lowers the mean
    squared error of the cached calibration images most, until no move lowers it by 1% or ``moves``
    moves were made."""
    if any(replay() is None for replay in runs.replays[:1]):
        raise ValueError("refining a learned plan replays the calibration generations: pass generator=torch.Generator()")
    weights_for = estimator("fitted", history, runs.gram)
    best, best_error = plan, _cached_error(pipe, runs, plan)
    for _ in range(moves):
        schedules = [sorted({*best.computed[:i], step + shift, *best.computed[i + 1:]})
                     for i, step in enumerate(best.computed) if i for shift in (-1, 1)]
        schedules = [m for m in schedules if len(m) == len(best.computed) and 0 < m[1] and m[-1] < plan.steps]
        trials = [(error, candidate) for candidate in (plan_for(runs.gram, m, weights_for, history) for m in schedules)
                  for error in [_cached_error(pipe, runs, candidate)]]
        error, candidate = min(trials, key=lambda t: t[0], default=(np.inf, None))
        if error >= 0.99 * best_error:
            break
        best, best_error = candidate, error
    return best


def _cached_error(pipe, runs: UncachedRuns, plan: Plan) -> float:
    budget = len(plan.computed)
    attach(pipe, Learned(budget, plans={budget: plan}))
    try:
        return float(np.mean([np.mean((samples(pipe(**replay())) - reference) ** 2)
                              for replay, reference in zip(runs.replays, runs.outputs)]))
    finally:
        detach(pipe)


def learned_plans(pipe, prompts, budgets, history: int = 2, refine: bool = False, **call_kwargs) -> dict[int, Plan]:
    """For each budget, the schedule and forecast weights of ``Learned`` (see ``learned_policy``)."""
    runs = uncached_runs(pipe, prompts, **call_kwargs)
    fitted = estimator("fitted", history, runs.gram)
    plans = {budget: best_plan(runs.gram, budget, fitted, history) for budget in budgets}
    if refine:
        plans = {budget: refine_plan(pipe, runs, plan, history) for budget, plan in tqdm(plans.items(), desc="refining")}
    return plans
