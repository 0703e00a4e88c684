"""A learned schedule with learned forecast weights (the idea of L2P, arXiv 2604.26365), calibrated
by ``cachelab.calibrate.learned_policy`` on a few uncached generations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..schedules import Plan
from ..tune.knobs import budget_knob
from .base import NOT_RECORDED, CachePolicy, Decision, StepContext, check_number, compute
from .planned import follow
from .registry import register_policy


@register_policy("learned")
@dataclass(eq=False, repr=False)
class Learned(CachePolicy):
    """Compute the ``budget`` steps of a calibrated schedule; forecast each other step as the calibrated
    per-step linear combination of the last computed residuals. ``plans`` (budget -> plan, as stored by
    calibration) default to the model's calibration (``cachelab.calibration``); records leave them out.

    ``unit="block"``: every block follows a schedule of its own (``block_plans``: budget -> block unit ->
    plan), computing its steps and forecasting its residual at the others; ``budget`` is then the block work
    of ``budget`` whole-transformer steps, shared out among the blocks by calibration
    (``cachelab.calibrate.learned_policy(pipe, prompts, budget, unit="block")``)."""
    parity = "none: no peer implementation; plans and weights checked against brute force and least squares (tests/test_schedules.py)"

    calibrated = ("plans", "block_plans")
    budget: int = 6
    unit: str = "step"
    plans: dict | None = field(default=None, metadata=NOT_RECORDED)
    block_plans: dict | None = field(default=None, metadata=NOT_RECORDED)
    tune_knob = budget_knob()  # what cachelab.tune searches

    def __post_init__(self) -> None:
        check_number("budget", self.budget, minimum=1, integer=True)
        if self.unit not in ("step", "block"):
            raise ValueError(f"unit must be 'step' or 'block' for the learned policy, got {self.unit!r}")
        self.in_use: dict[str, Plan] = {}  # "step" or a block unit -> its plan

    @property
    def key(self) -> str:
        return "plans" if self.unit == "step" else "block_plans"

    @property
    def history(self) -> int:
        return max((plan.history for plan in self.in_use.values()), default=1)

    def for_model(self, numbers, family) -> "Learned":
        if getattr(self, self.key) is None and numbers.get(self.key) is None:
            raise ValueError(self.uncalibrated([self.key], family))
        policy = dataclasses.replace(self, **{self.key: getattr(self, self.key) or numbers[self.key]})
        stored = {int(budget): plan for budget, plan in getattr(policy, self.key).items()}
        if self.budget not in stored:
            raise ValueError(
                f"no learned {'block ' if self.unit == 'block' else ''}plan for budget={self.budget} on this {family} "
                f"model; calibrated budgets: {', '.join(map(str, sorted(stored))) or 'none'}. Fit one with "
                f"cachelab.calibrate.learned_policy(pipe, prompts, budget=..., unit={self.unit!r}) or python -m cachelab.calibrate"
            )
        chosen = stored[self.budget] if self.unit == "block" else {"step": stored[self.budget]}
        policy.in_use = {unit: plan if isinstance(plan, Plan) else Plan.from_json(plan) for unit, plan in chosen.items()}
        return policy

    def uncalibrated(self, missing, family):
        return (
            f"the learned policy has no calibrated {'block ' if self.unit == 'block' else ''}plans for this {family} "
            f"model; fit them with cachelab.calibrate.learned_policy(pipe, prompts, budget=..., unit={self.unit!r}) or "
            "python -m cachelab.calibrate, then pass calibration_file=<its calibration.json>"
        )

    def check_steps(self, steps: int) -> None:
        calibrated = next(iter(self.in_use.values())).steps
        if calibrated != steps:
            raise ValueError(f"the learned plan for budget={self.budget} was calibrated for {calibrated} steps, "
                             f"not {steps}: use steps={calibrated}, or calibrate for {steps} steps")

    def decide(self, ctx: StepContext) -> Decision:
        plan = self.in_use.get(ctx.unit)
        return compute() if plan is None else follow(plan, self, ctx)
