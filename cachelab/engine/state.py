"""What the executor keeps: per CFG branch (policy copy, step counter, kept outputs per unit), per
transformer call in flight, and the trace record of each call."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from ..policies.base import CachePolicy, Decision, StepContext, as_float, compute
from .units import Kept


@dataclass
class StepRecord:
    """One transformer call of a generation.

    ``computed``: every block ran. ``work``: the computed share of the call's block work, each block or
    module weighted by its measured time. ``unit``: the policy's unit; ``units`` the (unit, computed)
    decisions of a block- or module-unit policy in this call; ``skipped_units`` the blocks or modules
    (by cost key: ``block3``, ``block3.ff_context``) stood in for."""

    step: int
    branch: str
    computed: bool
    signal: float | None
    seconds: float
    raw_timestep: Any = field(default=None, repr=False)
    unit: str = "step"
    work: float = 1.0
    units: tuple[tuple[str, bool], ...] = field(default=(), repr=False)
    skipped_units: tuple[str, ...] = field(default=(), repr=False)
    batch_share: float = field(default=1.0, repr=False)  # 0.5: a batched CFG call run on its cond half only
    expert: int = field(default=0, repr=False)  # which transformer ran it: 1 for Wan 2.2's transformer_2

    @property
    def timestep(self) -> float | None:
        return as_float(self.raw_timestep)

    @classmethod
    def of_call(cls, call: "Call", seconds: float, timestep, levels: list[str], expert: int = 0) -> "StepRecord":
        """The record of a finished call: computed when no unit at any level was stood in for."""
        skipped = tuple(call.skipped)
        units = tuple((unit, decision.compute) for unit, decision in call.unit_decisions.items())
        decision = (call.decision or compute()) if "step" in levels else None
        return cls(call.context.step, call.context.branch, not skipped and (decision is None or decision.compute),
                   None if decision is None else decision.signal, seconds, timestep, unit="+".join(levels), units=units,
                   skipped_units=skipped, batch_share=call.batch_share, expert=expert)


@dataclass
class Level:
    """One policy of the attached stack (a single policy is a stack of one): where it decides, and how many
    outputs each of its units keeps for its stand-in."""

    unit: str
    policy: CachePolicy
    history: int = field(init=False)

    def __post_init__(self):
        self.history = max(self.policy.history, self.policy.stand_in_rule.history)

    def kept(self) -> Kept:
        return Kept(self.history, self.policy.stand_in_rule.state())


@dataclass
class Branch:
    """One CFG branch: a copy of every level's policy, its step counter, and the kept outputs of every unit
    (``"step"``, ``"block3"``, ``"block3.attn1"``)."""

    levels: dict[str, Level]
    step: int = 0
    policies: dict[str, CachePolicy] = field(init=False)
    kept: dict[str, Kept] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # store key -> the unit kind of the level that keeps it
    token_states: dict = field(default_factory=dict)  # a token level's per-token bookkeeping (cachelab.engine.tokens)

    def __post_init__(self):
        self.policies = {unit: copy.deepcopy(level.policy) for unit, level in self.levels.items()}
        for policy in self.policies.values():
            policy.reset()

    @property
    def policy(self) -> CachePolicy:
        """The outermost level's policy copy (the only one when a single policy is attached)."""
        return next(iter(self.policies.values()))

    def kept_for(self, key: str, unit: str) -> Kept:
        """The store of the unit ``key`` of the level that decides per ``unit``."""
        if key not in self.kept:
            self.kept[key], self.kinds[key] = self.levels[unit].kept(), unit
        return self.kept[key]


def call_key(call, key: str) -> str:
    """A module's store key for its n-th call within one transformer call (CogView4 runs its ``ff`` on the image, then
    on the text): the key itself the first time, ``key#n`` after."""
    repeat = call.module_calls[key] = call.module_calls.get(key, -1) + 1
    return key if not repeat else f"{key}#{repeat}"


@dataclass
class Call:
    """One transformer call in flight."""

    branch: Branch
    context: StepContext
    decision: Decision | None = None
    skipping: bool = False
    input_hidden: torch.Tensor | None = None
    reference: tuple = (None, None)
    following: Decision | None = None  # the step's leading branch's decision, under shared CFG decisions
    blocks: list = field(default_factory=list)  # the (block, output format) of the transformer called (an expert)
    refresh: bool = False  # the first call of an expert after the switch: every unit computes
    inner: bool = True  # whether the block in flight is one the inner levels (block, module) decide in
    unit_decisions: dict[str, Decision] = field(default_factory=dict)
    module_calls: dict[str, int] = field(default_factory=dict)  # site key -> times called in this call so far
    skipped: list[str] = field(default_factory=list)  # cost keys of the blocks and modules stood in for
    batch_share: float = 1.0  # the share of the batch that runs (FasterCache's CFG part: 0.5, the cond half)
    keeps_cond_half: bool = False  # a batched CFG call whose kept module outputs are the cond half's


def kept_bytes(branches, levels, extra: dict[str, int]) -> dict[str, int]:
    """Bytes of every unit store over ``branches``, per unit kind of the level that keeps it, with ``extra`` added."""
    sizes = dict.fromkeys(levels, 0)
    for branch in branches:
        for key, kept in branch.kept.items():
            sizes[branch.kinds[key]] += kept.nbytes()
    for kind, size in extra.items():
        sizes[kind] = sizes.get(kind, 0) + size
    return sizes


def merge_peaks(into: dict[str, int], peaks: dict[str, int]) -> None:
    """``into`` becomes the larger of itself and ``peaks``, per unit kind."""
    for kind, size in peaks.items():
        into[kind] = max(into.get(kind, 0), size)
