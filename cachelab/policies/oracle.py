"""The oracle schedule: the ``budget`` steps to compute for one prompt and seed that minimise the error of
the stand-ins on an uncached rehearsal of that very generation. It knows the answer, so it is a bound
to compare with, not a policy to deploy; its bound is on that residual error, not on the final image:
once a step is approximated the trajectory drifts, and a schedule tuned on realised images can beat it."""

from __future__ import annotations

from dataclasses import dataclass

from ..schedules import FORECASTS, best_plan, estimator, gram
from ..tune.knobs import budget_knob
from .base import CachePolicy, Decision, StepContext, check_number
from .planned import follow
from .registry import register_policy


@register_policy("oracle")
@dataclass(eq=False, repr=False)
class Oracle(CachePolicy):
    """Compute the ``budget`` steps (step 0 among them) whose stand-ins for the skipped steps have the
    least summed squared error against the uncached residuals of the same generation. Stand-ins:
    ``forecast="reuse"`` (the newest computed residual), ``"taylor"`` (Taylor of order ``history`` - 1)
    or ``"fitted"`` (the least-squares combination of the last ``history`` computed residuals, fitted on
    this generation). Needs ``executor.rehearse(...)`` before each generation; the runner does that."""
    parity = "none: no peer implementation (a bound); its dynamic programme matches brute force (tests/test_schedules.py)"

    rehearses = True
    bound = True

    budget: int = 8
    forecast: str = "fitted"
    history: int = 2
    tune_knob = budget_knob()  # what cachelab.tune searches

    def __post_init__(self) -> None:
        check_number("budget", self.budget, minimum=1, integer=True)
        if self.forecast not in FORECASTS:
            raise ValueError(f"forecast must be one of {', '.join(FORECASTS)}, got {self.forecast!r}")
        self.history = 1 if self.forecast == "reuse" else check_number("history", self.history, minimum=1, integer=True)
        self.plans: dict = {}

    def check_steps(self, steps: int) -> None:
        if self.budget > steps:
            raise ValueError(f"budget={self.budget} is more than the {steps} steps of a generation: use 1..{steps}")

    def plan(self, residuals) -> None:
        self.plans = {}
        for branch, steps in residuals.items():
            g = gram(steps)
            self.plans[branch] = best_plan(g, self.budget, estimator(self.forecast, self.history, g), self.history)

    def decide(self, ctx: StepContext) -> Decision:
        plan = self.plans.get(ctx.branch)
        if plan is None:
            raise RuntimeError(
                f"{self!r} has no plan for branch {ctx.branch!r}: rehearse the same generation first "
                "(executor.rehearse(lambda: pipe(...)) with the same prompt and seed; python -m cachelab does it)"
            )
        return follow(plan, self, ctx)
