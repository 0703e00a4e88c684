"""Per-block learned schedules: every block computes its own steps and forecasts its own residual at the
others, fitted on uncached calibration generations, within the block work of ``budget`` whole-transformer
steps.

The search starts from the step-level plan (every block computing the same steps with the step-level
forecast weights: the step-level policy's very images) and moves computed steps of groups of consecutive
blocks (the first blocks, the last ones; the groups split where the block kind changes, e.g. Flux's double-
and single-stream blocks, and in the middle) one step earlier or later, keeping the move that brings the
cached calibration images closest to the uncached ones, as ``refine_plan`` does for whole steps. Moves keep
the block work (each block computes as many steps as before), and a move is kept only when it lowers the
error on the realised calibration images: the per-block plan is never worse than the step-level plan it
starts from on the calibration data. Every block forecasts a skipped step with the step-level least-squares
weights for its own last computed steps (fitted on the residual of all blocks).

Why so constrained (``experiments/learned_blocks/README.md``): a block computed at a step where a block
before it was forecast from residuals two or more steps old runs on an input far off the calibration's and
keeps a residual its later forecasts extrapolate; on the digits model one such step costs 5-10 dB, far more
than any forecast error a per-step objective measures. Moves that would make one are not tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from ..engine import parallel
from ..engine.attach import attach, detach
from ..engine.units import block_unit
from ..policies.base import CachePolicy, Decision, StepContext, compute
from ..policies.learned import Learned
from ..runner import samples
from ..schedules import Plan, best_plan, estimator, plan_for
from .learned import _replayable, learned_plans


class _EveryBlock(CachePolicy):
    """A block-unit policy that computes everything: the executor records each block's residuals."""

    unit = "block"
    caches = False

    def decide(self, ctx: StepContext) -> Decision:
        return compute()


@dataclass
class BlockRuns:
    """Uncached calibration generations: the Gram matrix of the residual of all blocks between every pair
    of steps (summed over generations and branches), the block units, their kinds (class names) and
    measured seconds, the uncached images, and how to replay each generation (``None`` without a
    ``torch.Generator`` in the call)."""

    gram: np.ndarray
    units: list[str]
    kinds: list[str]
    costs: dict[str, float]
    replays: list[Callable[[], dict | None]]
    outputs: list[np.ndarray]

    @property
    def replayable(self) -> bool:
        return bool(self.replays) and all(replay() is not None for replay in self.replays[:1])


def block_runs(pipe, prompts, **call_kwargs) -> BlockRuns:
    """One uncached generation per prompt, every block computing (so that each block's time is measured)."""
    executor = attach(pipe, _EveryBlock())
    total, replays, outputs, units = None, [], [], []
    try:
        with parallel.reducing_over(parallel.group_of(pipe.transformer)):
            for prompt in prompts:
                replays.append(_replayable(dict(prompt=prompt, **call_kwargs)))
                output = []
                for branch in executor.rehearse(lambda: output.append(pipe(prompt, **call_kwargs))).values():
                    units = [block_unit(i) for i in range(len(branch))]
                    steps = torch.stack([sum(branch[unit][s] for unit in units).reshape(-1).double()
                                         for s in range(len(branch[units[0]]))])
                    g = parallel.reduce_sums(steps @ steps.T).numpy()
                    total = g if total is None else total + g
                outputs.append(samples(output[0]))
        kinds = [type(block).__name__ for block, _ in executor.blocks]
    finally:
        detach(pipe)
    return BlockRuns(total, units, kinds, {unit: executor.costs.of(unit) for unit in units}, replays, outputs)


def block_groups(kinds: list[str]) -> list[range]:
    """The groups of consecutive blocks a move shifts together: all blocks; the first and the last blocks,
    split where the block kind changes and in the middle."""
    n = len(kinds)
    cuts = {n // 2} | {i for i in range(1, n) if kinds[i] != kinds[i - 1]}
    groups = [range(n)] + [g for cut in sorted(cuts) if 0 < cut < n for g in (range(cut), range(cut, n))]
    return list(dict.fromkeys(groups))


def _stale_input(schedules: list[frozenset], steps: int) -> bool:
    """Whether at some step a block computes after a block that is forecast from residuals more than one
    step old (the mixed steps that cost most; see the module's docstring)."""
    for step in range(1, steps):
        stale = False
        for schedule in schedules:
            if step in schedule:
                if stale:
                    return True
            elif step - 1 not in schedule:
                stale = True
    return False


def _moves(schedules: list[frozenset], groups: list[range], steps: int) -> list[list[frozenset]]:
    """Every schedule that moves one step computed by all blocks of a group one step earlier or later."""
    found = {}
    for group in groups:
        shared = frozenset.intersection(*(schedules[b] for b in group)) - {0}
        for step in sorted(shared):
            for target in (step - 1, step + 1):
                if not 0 < target < steps or any(target in schedules[b] for b in group):
                    continue
                moved = [schedules[b] - {step} | {target} if b in group else schedules[b] for b in range(len(schedules))]
                if not _stale_input(moved, steps):
                    found.setdefault(tuple(moved), moved)
    return list(found.values())


def realised_error(pipe, runs: BlockRuns, budget: int, plans: dict[str, Plan]) -> float:
    """The mean squared error of the cached calibration images (following ``plans``) against the uncached ones."""
    attach(pipe, Learned(budget, unit="block", block_plans={budget: plans}))
    try:
        return float(np.mean([np.mean((samples(pipe(**replay())) - reference) ** 2)
                              for replay, reference in zip(runs.replays, runs.outputs)]))
    finally:
        detach(pipe)


def search_block_plans(pipe, runs: BlockRuns, start: Plan, budget: int, history: int = 2, moves: int = 6,
                       log: list | None = None) -> dict[str, Plan]:
    """From ``start`` (one step plan for every block), keep the group move (``_moves``) that lowers the
    error of the cached calibration images most, until none lowers it by 1% or ``moves`` moves were made.
    ``log`` collects (realised error, schedules) of the start and of every kept move."""
    weights_for = estimator("fitted", history, runs.gram)

    @lru_cache(maxsize=None)
    def plan(computed: frozenset) -> Plan:
        return plan_for(runs.gram, sorted(computed), weights_for, history) if computed != frozenset(start.computed) else start

    def plans(schedules) -> dict[str, Plan]:
        return {unit: plan(schedule) for unit, schedule in zip(runs.units, schedules)}

    best = [frozenset(start.computed)] * len(runs.units)
    best_error = realised_error(pipe, runs, budget, plans(best))
    if log is not None:
        log.append((best_error, best))
    groups = block_groups(runs.kinds)
    for _ in range(moves):
        trials = [(realised_error(pipe, runs, budget, plans(m)), m) for m in _moves(best, groups, start.steps)]
        error, candidate = min(trials, key=lambda t: t[0], default=(np.inf, None))
        if error >= 0.99 * best_error:
            break
        best, best_error = candidate, error
        if log is not None:
            log.append((best_error, best))
    return plans(best)


def learned_block_plans(pipe, prompts, budgets, history: int = 2, step_plans: dict[int, Plan] | None = None,
                        moves: int = 0, **call_kwargs) -> dict[int, dict[str, Plan]]:
    """For each budget (whole-transformer step equivalents of block work), every block's plan.

    ``step_plans`` (budget -> step-level ``Plan``, e.g. the refined ones of ``learned_plans``) are the
    starting points; without them, the step-level dynamic programme's plans on the same generations. The
    search (up to ``moves`` group moves; minutes per budget on digits on 2 cores) replays the calibration
    generations, so ``call_kwargs`` must hold a ``torch.Generator``; without one, or with ``moves=0`` (the
    default), every block follows the step plan."""
    runs = block_runs(pipe, prompts, **call_kwargs)
    fitted = estimator("fitted", history, runs.gram)
    result = {}
    for budget in budgets:
        start = (step_plans or {}).get(budget) or best_plan(runs.gram, budget, fitted, history)
        if runs.replayable and moves:
            result[budget] = search_block_plans(pipe, runs, start, budget, history, moves)
        else:
            result[budget] = {unit: start for unit in runs.units}
    return result


def learned_block_policy(pipe, prompts, budget: int, history: int = 2, refine: bool = False,
                         step_plan: Plan | None = None, **call_kwargs) -> Learned:
    """A ready per-block ``Learned`` policy (``unit="block"``) for ``pipe``, calibrated on ``prompts``:
    without ``refine``, every block follows the step-level plan; with it, the step plan is refined
    (``refine_plan``) and the per-block search starts from it, both on the same calibration generations."""
    if refine and step_plan is None:
        generator = call_kwargs.get("generator")
        state = generator.get_state() if isinstance(generator, torch.Generator) else None
        step_plan = learned_plans(pipe, prompts, [budget], history, refine=True, **call_kwargs)[budget]
        if state is not None:  # the block search replays the same generations
            generator.set_state(state)
    plans = learned_block_plans(pipe, prompts, [budget], history, moves=6 if refine else 0,
                                step_plans=None if step_plan is None else {budget: step_plan}, **call_kwargs)
    return Learned(budget, unit="block", block_plans=plans)


def learned_policy(pipe, prompts, budget: int, history: int = 2, refine: bool = False, unit: str = "step",
                   **call_kwargs) -> Learned:
    """A ready ``Learned`` policy for ``pipe``: ``budget`` computed steps chosen, and the forecast of each
    other step fitted (least squares over the last ``history`` computed residuals), on uncached
    generations of ``prompts`` with ``call_kwargs`` (use prompts or seeds you will not evaluate on).
    ``refine`` also searches the schedule on those generations' cached images (a minute on digits).
    ``unit="block"``: a schedule per block within ``budget`` steps' worth of block work; with ``refine``,
    searched block group by block group from the refined step plan on the cached calibration images
    (``cachelab.calibrate.learned_blocks``), without it every block follows the step plan."""
    if unit == "block":
        return learned_block_policy(pipe, prompts, budget, history, refine, **call_kwargs)
    if unit != "step":
        raise ValueError(f"unit must be 'step' or 'block', got {unit!r}")
    plan = learned_plans(pipe, prompts, [budget], history, refine, **call_kwargs)[budget]
    return Learned(budget, plans={budget: plan})
