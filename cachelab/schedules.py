"""Which steps to compute, and with which weights to forecast the others, from uncached residuals.

Everything works on the Gram matrix G[a, b] = <r_a, r_b> of the residuals of all blocks at every step
of uncached generations (summed over generations: one schedule for all of them). The error of standing
in for step s with ``sum_i w_i r_{k_i}`` is ``G[s,s] - 2 w.G[k,s] + w.G[k,k].w``, so a dynamic programme
over (the last computed steps, steps left to compute) finds the schedule of ``budget`` computed steps
with the least total error of the skipped ones (DESIGN.md section 3: the oracle schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch

from .engine.parallel import reduce_sums
from .forecasters.taylor import taylor_weights

#: weights(kept steps newest first, skipped step) -> weights over the kept residuals
Estimator = Callable[[tuple[int, ...], int], Sequence[float]]
FORECASTS = ("reuse", "taylor", "fitted")


def gram(residuals: Sequence[torch.Tensor]) -> np.ndarray:
    """G[a, b] = <r_a, r_b> over the residuals of one generation's steps (float64); under context
    parallelism each rank holds its shard of every residual, and the ranks' Gram matrices add up."""
    flat = torch.stack([r.reshape(-1).double() for r in residuals])
    return reduce_sums(flat @ flat.T).numpy()


def fitted_weights(g: np.ndarray, kept: Sequence[int], target: int) -> list[float]:
    """Least-squares weights of ``r_target`` over ``r_kept`` (a tiny ridge keeps collinear steps solvable)."""
    kept = list(kept)
    a = g[np.ix_(kept, kept)]
    a = a + np.eye(len(kept)) * 1e-9 * np.trace(a)
    return np.linalg.solve(a, g[kept, target]).tolist()


def estimator(forecast: str, history: int, g: np.ndarray | None = None) -> Estimator:
    """The stand-in rule: reuse the newest residual, Taylor of order history-1, or least squares over G."""
    if forecast not in FORECASTS:
        raise ValueError(f"forecast must be one of {', '.join(FORECASTS)}, got {forecast!r}")
    if forecast == "reuse":
        return lambda kept, s: [1.0]
    if forecast == "taylor":
        return lambda kept, s: taylor_weights(kept, s, history - 1)
    return lambda kept, s: fitted_weights(g, kept[:history], s)


def stand_in_error(g: np.ndarray, kept: Sequence[int], target: int, weights: Sequence[float]) -> float:
    kept, w = list(kept)[: len(weights)], np.asarray(weights, dtype=np.float64)
    return float(g[target, target] - 2 * w @ g[kept, target] + w @ g[np.ix_(kept, kept)] @ w)


@dataclass
class Plan:
    """A schedule of computed steps and the forecast weights (newest kept residual first) of the others."""

    steps: int
    computed: list[int]
    weights: dict[int, list[float]]
    error: float = 0.0

    @property
    def history(self) -> int:
        return max((len(w) for w in self.weights.values()), default=1)

    def to_json(self) -> dict:
        return dict(steps=self.steps, computed=self.computed, weights={str(s): w for s, w in self.weights.items()},
                    error=self.error)

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        weights = {int(s): [float(x) for x in w] for s, w in data["weights"].items()}
        return cls(int(data["steps"]), [int(s) for s in data["computed"]], weights, float(data.get("error", 0.0)))


def best_plan(g: np.ndarray, budget: int, weights_for: Estimator, history: int) -> Plan:
    """The ``budget`` steps to compute (step 0 always) whose stand-ins for the other steps have the
    least summed squared error, and those stand-ins' weights."""
    return best_plans(g, [budget], weights_for, history)[budget]


def best_plans(g: np.ndarray, budgets, weights_for: Estimator, history: int) -> dict[int, Plan]:
    """``best_plan`` for several budgets at once (one dynamic programme, its table shared)."""
    steps = len(g)
    for budget in budgets:
        if not (isinstance(budget, int) and 1 <= budget <= steps):
            raise ValueError(f"budget must be an integer in 1..{steps} (the number of steps), got {budget!r}")

    @lru_cache(maxsize=None)
    def error(kept: tuple[int, ...], target: int) -> float:
        return stand_in_error(g, kept, target, weights_for(kept, target))

    @lru_cache(maxsize=None)
    def rest(kept: tuple[int, ...], left: int) -> tuple[float, tuple[int, ...]]:
        """Least error after the computed steps ``kept`` (newest first) with ``left`` steps still to compute."""
        if left == 0:
            return sum(error(kept, s) for s in range(kept[0] + 1, steps)), ()
        best, skipped = (np.inf, ()), 0.0
        for step in range(kept[0] + 1, steps - left + 1):
            cost, after = rest(((step,) + kept)[:history], left - 1)
            if skipped + cost < best[0]:
                best = (skipped + cost, (step,) + after)
            skipped += error(kept, step)
        return best

    return {budget: plan_for(g, [0, *rest((0,), budget - 1)[1]], weights_for, history) for budget in budgets}


def plan_for(g: np.ndarray, computed: Sequence[int], weights_for: Estimator, history: int) -> Plan:
    """The plan that computes ``computed`` (step 0 among them) and stands in for the other steps with
    ``weights_for``; its ``error`` is the summed squared error of those stand-ins."""
    weights, kept, total = {}, (), 0.0
    for step in range(len(g)):
        if step in computed:
            kept = ((step,) + kept)[:history]
        else:
            weights[step] = [float(w) for w in weights_for(kept, step)]
            total += stand_in_error(g, kept, step, weights[step])
    return Plan(len(g), sorted(computed), weights, total)
