"""Asking a level's policy for a decision: its branch copy decides, unless the step's leading CFG branch already
did (shared CFG decisions) or a rehearsal computes everything; under context parallelism the ranks agree."""

from __future__ import annotations

import copy
from typing import Callable

from ..policies.base import Decision, StepContext, compute
from . import parallel
from .state import Call, Level
from .units import Kept

#: How the CFG branches of one step decide: each its own policy copy, or all as the first branch to call.
CFG_DECISIONS = ("separate", "shared")


class Decider:
    def __init__(self, levels: dict[str, Level], cfg_decisions: str, reduction: Callable[[], parallel.Reduction | None]):
        if cfg_decisions not in CFG_DECISIONS:
            raise ValueError(f"cfg_decisions must be {' or '.join(map(repr, CFG_DECISIONS))}, got {cfg_decisions!r}")
        self.levels, self.shared, self.reduction = levels, cfg_decisions == "shared", reduction
        self.rehearsing = False
        self.reset()

    def reset(self) -> None:
        self.leaders: dict[tuple[int, str], tuple[str, Decision]] = {}  # (step, unit) -> (branch, decision) of its first call

    def following(self, branch: str, step: int, unit: str = "step") -> Decision | None:
        """The decision this branch takes from the step's leading branch (shared CFG decisions), else None."""
        if not self.shared:
            return None
        leader = self.leaders.get((step, unit))
        return None if leader is None or leader[0] == branch else leader[1]

    def ask(self, call: Call, level: str, context: StepContext, following: Decision | None) -> Decision:
        if self.rehearsing:
            return compute()
        if following is not None:
            return following
        decision = parallel.ask(call.branch.policies[level], context, self.reduction(), self.levels[level].history)
        if call.refresh and not decision.compute:  # an expert's first call computes, whatever its policy said
            decision = compute(decision.signal)
        if self.shared:
            self.leaders.setdefault((context.step, context.unit), (context.branch, decision))
        return decision

    def ask_unit(self, call: Call, level: str, unit: str, kept: Kept, signals: dict, block: int, role: str | None = None) -> Decision:
        """The decision of ``level``'s policy for one block or module of the call in flight."""
        following = self.following(call.context.branch, call.context.step, unit)
        context = copy.copy(call.context)  # dataclasses.replace would validate every field again, at every unit
        context.unit, context.block, context.role, context.computed_steps = unit, block, role, tuple(kept.steps)
        context.signals = {} if following is not None else signals
        decision = self.ask(call, level, context, following)
        call.unit_decisions[unit] = decision
        return decision
