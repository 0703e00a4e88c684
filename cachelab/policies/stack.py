"""Several policies at once, nested by unit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.units import UNITS
from .base import CachePolicy, Decision, StepContext
from .registry import make_policy


@dataclass(eq=False, repr=False)
class Stack(CachePolicy):
    """A step policy decides first; inside the steps it computes (the blocks between its head and tail), a block
    policy decides per block; inside computed blocks, a module policy per module. ``policies``: at most one per
    unit, in any order, as policies, registered names or ``{"name": ..., knob: value}`` dicts
    (``Stack(["first_block", "pab"])``, ``cachelab.attach(pipe, [FirstBlockCache(0.2), PyramidAttentionBroadcast()])``).
    Each level keeps its own state, kept outputs and stand-ins; the trace records every level's decisions.

    ``text_kv`` (or the name ``"text_kv"`` among ``policies``) adds the exact text K/V cache under them all
    (``cachelab.engine.text_kv``)."""

    name = "stack"
    policies: list = field(default_factory=list)
    text_kv: bool = False

    def __post_init__(self) -> None:
        self.text_kv = self.text_kv or any(p == "text_kv" for p in self.policies if isinstance(p, str))
        built = [_policy(p) for p in self.policies if not (isinstance(p, str) and p == "text_kv")]
        if not built:
            raise ValueError("a stack needs at least one policy, e.g. Stack(['first_block', 'pab'])")
        units = [p.unit for p in built]
        for policy in built:
            if isinstance(policy, Stack) or policy.rehearses:
                raise ValueError(f"{policy!r} cannot be stacked: stacks hold single policies that decide while they run")
        if {"module", "token"} <= set(units):
            raise ValueError(f"a stack holds a module or a token policy, not both (both decide per module); got {built}")
        if len(set(units)) != len(units):
            raise ValueError(f"a stack holds one policy per unit (step, block, module); got units {units} for {built}")
        self.policies = sorted(built, key=lambda p: UNITS.index(p.unit))

    @property
    def levels(self) -> dict[str, CachePolicy]:
        return {policy.unit: policy for policy in self.policies}

    @property
    def label(self) -> str:
        """``first_block+pab+text_kv``: the policies' names, outermost first."""
        return "+".join([p.name for p in self.policies] + (["text_kv"] if self.text_kv else []))

    def decide(self, ctx: StepContext) -> Decision:
        raise RuntimeError("a Stack is never asked itself; the runtime asks each of its policies")

    def params(self) -> dict[str, Any]:
        return {"policies": [{"name": p.name, **p.params()} for p in self.policies], "text_kv": self.text_kv}

    def __repr__(self) -> str:
        return f"Stack({self.policies!r}{', text_kv=True' if self.text_kv else ''})"


def _policy(value) -> CachePolicy:
    if isinstance(value, CachePolicy):
        return value
    if isinstance(value, str):
        return make_policy(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        knobs = dict(value.items())
        return make_policy(knobs.pop("name"), **knobs)
    raise ValueError(f"a stack's policies are policies, names or dicts with a 'name'; got {value!r}")
