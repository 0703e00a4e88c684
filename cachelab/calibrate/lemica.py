"""LeMiCa's schedules (``cachelab.policies.lemica``) measured on a model: the Gram matrix of the residual of all
blocks at every step of a few uncached generations gives each edge's cost, the squared error of reusing step i's
residual until step j; the lexicographic minimax path of each budget is the schedule (``cachelab.minimax_path``)."""

from __future__ import annotations

import numpy as np

from ..minimax_path import minimax_path, reuse_errors
from ..policies.lemica import LeMiCa
from .learned import uncached_runs


def schedules_from_gram(gram: np.ndarray, budgets) -> dict[int, dict]:
    """For each budget: {"steps", "computed" (ascending, from 0), "worst" (edge costs, largest first)}."""
    weights = reuse_errors(gram)
    schedules = {}
    for budget in budgets:
        computed, worst = minimax_path(weights, int(budget))
        schedules[int(budget)] = {"steps": len(gram), "computed": computed, "worst": [float(w) for w in worst]}
    return schedules


def lemica_schedules(pipe, prompts, budgets, **call_kwargs) -> dict[int, dict]:
    """LeMiCa's schedule of each budget for ``pipe``, from one uncached generation per prompt with ``call_kwargs``
    (use prompts or seeds you will not evaluate on)."""
    return schedules_from_gram(uncached_runs(pipe, prompts, **call_kwargs).gram, budgets)


def lemica_policy(pipe, prompts, budget: int, **call_kwargs) -> LeMiCa:
    """A ready ``LeMiCa`` policy for ``pipe`` with ``budget`` computed steps."""
    return LeMiCa(budget, schedules=lemica_schedules(pipe, prompts, [budget], **call_kwargs))
