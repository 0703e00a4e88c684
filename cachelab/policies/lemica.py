"""LeMiCa (Gao et al., NeurIPS 2025, "Lexicographic Minimax Path Caching"): a calibrated schedule of computed steps,
the lexicographic minimax path through a graph of steps (``cachelab.minimax_path``), calibrated by
``cachelab.calibrate.lemica_schedules`` on a few uncached generations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .base import NOT_RECORDED, CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy


@register_policy("lemica")
@dataclass(eq=False, repr=False)
class LeMiCa(CachePolicy, Forecasts):
    """Compute the ``budget`` steps of a calibrated schedule and reuse the residual of all blocks at the others (or
    stand in with the policy's ``forecaster``). The schedule is LeMiCa's: over a graph whose edge (i, j) costs the
    error of computing step i and reusing its residual until step j, the path of ``budget`` edges whose largest edge
    cost is least, then its second largest, and so on. ``schedules`` (budget -> {"steps", "computed", "worst"}, as
    calibration stores them) default to the model's calibration; records leave them out. Edge costs here are the
    squared error of the reused residual against the uncached ones (from the residuals' Gram matrix), where LeMiCa
    measures the error of the final output with that one segment cached (a generation per edge)."""
    parity = "none: no peer implementation; the minimax path matches brute force (tests/test_minimax_path.py, tests/test_lemica.py)"

    calibrated = ("schedules",)
    budget: int = 6
    schedules: dict | None = field(default=None, metadata=NOT_RECORDED)

    def __post_init__(self) -> None:
        check_number("budget", self.budget, minimum=1, integer=True)
        self.schedule: dict | None = None
        self.computed: frozenset[int] = frozenset()

    @classmethod
    def tune_knob(cls, steps: int, blocks: int) -> tuple[str, tuple]:
        """The knob ``cachelab.tune`` should search and its values, safest first: computed steps, all of them down to 1."""
        return "budget", tuple(range(steps, 0, -1))

    def for_model(self, numbers, family) -> "LeMiCa":
        schedules = self.schedules if self.schedules is not None else numbers.get("schedules")
        if schedules is None:
            raise ValueError(self.uncalibrated(["schedules"], family))
        stored = {int(budget): schedule for budget, schedule in schedules.items()}
        if self.budget not in stored:
            raise ValueError(
                f"no LeMiCa schedule for budget={self.budget} on this {family} model; calibrated budgets: "
                f"{', '.join(map(str, sorted(stored))) or 'none'}. Fit one with cachelab.calibrate.lemica_schedules"
                "(pipe, prompts, budgets=[...]) or python -m cachelab.calibrate calibrate.budgets=[...]")
        policy = dataclasses.replace(self, schedules=schedules)
        policy.schedule = stored[self.budget]
        policy.computed = frozenset(int(step) for step in policy.schedule["computed"])
        return policy

    def uncalibrated(self, missing, family):
        return (f"LeMiCa has no calibrated schedules for this {family} model; fit them with "
                "cachelab.calibrate.lemica_schedules(pipe, prompts, budgets=[...]) or python -m cachelab.calibrate, "
                "then pass calibration_file=<its calibration.json>")

    def check_steps(self, steps: int) -> None:
        if self.schedule is not None and int(self.schedule["steps"]) != steps:
            raise ValueError(f"the LeMiCa schedule for budget={self.budget} was calibrated for {self.schedule['steps']} "
                             f"steps, not {steps}: use steps={self.schedule['steps']}, or calibrate for {steps} steps")

    def decide(self, ctx: StepContext) -> Decision:
        if self.schedule is None:
            raise RuntimeError(f"{self!r} has no schedule: attach it to a pipeline (which reads the calibration), or "
                               "call for_model({'schedules': ...}, family) first")
        if ctx.num_steps is not None and ctx.step == 0:
            self.check_steps(ctx.num_steps)
        return compute() if ctx.step in self.computed else self.skip(ctx)
