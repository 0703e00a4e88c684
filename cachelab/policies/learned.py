"""A learned schedule with learned forecast weights (the idea of L2P, arXiv 2604.26365), calibrated
by ``cachelab.calibrate.learned_policy`` on a few uncached generations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..schedules import Plan
from .base import NOT_RECORDED, CachePolicy, Decision, StepContext, check_number
from .planned import follow
from .registry import register_policy


@register_policy("learned")
@dataclass(eq=False, repr=False)
class Learned(CachePolicy):
    """Compute the ``budget`` steps of a calibrated schedule; forecast each other step as the calibrated
    per-step linear combination of the last computed residuals. ``plans`` (budget -> plan, as stored by
    calibration) default to the model's calibration (``cachelab.calibration``); records leave them out."""

    calibrated = ("plans",)
    budget: int = 6
    plans: dict | None = field(default=None, metadata=NOT_RECORDED)

    def __post_init__(self) -> None:
        check_number("budget", self.budget, minimum=1, integer=True)
        self.plan_in_use: Plan | None = None

    @property
    def history(self) -> int:
        return 1 if self.plan_in_use is None else self.plan_in_use.history

    def for_model(self, numbers, family) -> "Learned":
        policy = dataclasses.replace(super().for_model(numbers, family))  # a new object even when nothing was missing
        stored = {int(budget): plan for budget, plan in policy.plans.items()}
        if self.budget not in stored:
            raise ValueError(
                f"no learned plan for budget={self.budget} on this {family} model; calibrated budgets: "
                f"{', '.join(map(str, sorted(stored))) or 'none'}. Fit one with "
                "cachelab.calibrate.learned_policy(pipe, prompts, budget=...) or python -m cachelab.calibrate"
            )
        plan = stored[self.budget]
        policy.plan_in_use = plan if isinstance(plan, Plan) else Plan.from_json(plan)
        return policy

    def uncalibrated(self, missing, family):
        return (
            f"the learned policy has no calibrated plans for this {family} model; fit them with "
            "cachelab.calibrate.learned_policy(pipe, prompts, budget=...) or python -m cachelab.calibrate, "
            "then pass calibration_file=<its calibration.json>"
        )

    def check_steps(self, steps: int) -> None:
        if self.plan_in_use.steps != steps:
            raise ValueError(f"the learned plan for budget={self.budget} was calibrated for {self.plan_in_use.steps} steps, "
                             f"not {steps}: use steps={self.plan_in_use.steps}, or calibrate for {steps} steps")

    def decide(self, ctx: StepContext) -> Decision:
        return follow(self.plan_in_use, self, ctx)
