"""What the executor checks when a policy is attached to a model: every requirement the policy declares."""

from __future__ import annotations

from ..policies.base import CachePolicy
from ..policies.signals import REGISTRY
from .units import ROLES, UNITS, module_sites


def check_policy(policy: CachePolicy, spec, blocks: list) -> None:
    """Raise ValueError, saying what would work, where ``policy`` asks for something this model cannot give."""
    unknown = set(policy.signals) - set(REGISTRY)
    if unknown:
        raise ValueError(f"{policy!r} asks for unknown signals {sorted(unknown)}; known: {', '.join(sorted(REGISTRY))}")
    if "modulated_input" in policy.signals and spec.modulated_input is None:
        raise ValueError(f"the {spec.family} spec defines no modulated input for {policy!r}")
    if not (isinstance(policy.history, int) and policy.history >= 1):
        raise ValueError(f"{policy!r} keeps history={policy.history!r} residuals; it must be an integer >= 1")
    if policy.unit not in UNITS:
        raise ValueError(f"{policy!r} decides per {policy.unit!r}; a policy's unit is one of {', '.join(UNITS)}")
    where = {REGISTRY[name].where for name in policy.signals}
    if "block" in where and policy.unit != "block":
        raise ValueError(f"{policy!r} reads a block's input signal, which only block-unit policies (unit = 'block') get")
    if where & {"call", "first_block", "head"} and policy.unit != "step":
        raise ValueError(f"{policy!r} reads signals of the whole call, which only step-unit policies (unit = 'step') get")
    if policy.unit in ("module", "token"):
        if set(policy.roles) - set(ROLES):
            raise ValueError(f"{policy!r} decides for roles {sorted(policy.roles)}; module roles are {', '.join(ROLES)}")
        if not module_sites([b for b, _ in blocks], spec.module_roles, policy.roles):
            raise ValueError(f"the {spec.family} spec names no modules of roles {sorted(policy.roles)} in its blocks")
        if any(getattr(block.forward, "_cachelab_compiled", False) for block, _ in blocks):
            raise ValueError(f"{policy!r} decides per module inside the blocks, which are compiled whole "
                             "(cachelab.compile_blocks, compile=true): its decisions would break the compiled graphs "
                             "at every module; run it on uncompiled blocks (compile=false)")
    head, tail = policy.head_blocks, policy.tail_blocks
    if head < 0 or tail < 0 or head + tail >= len(blocks):
        raise ValueError(
            f"{policy!r} wants {head} head and {tail} tail blocks; this model has {len(blocks)} "
            "blocks, and at least one must lie between them"
        )


def check_shardable(policies) -> None:
    """Under context parallelism, where each rank holds a shard of the sequence: refuse stand-ins that fit all of it."""
    for policy in policies:
        rule = policy.stand_in_rule
        if not rule.elementwise:
            raise ValueError(f"{policy!r}: the {rule.name} stand-in fits the whole sequence, and under context parallelism "
                             "each rank holds a shard of it; use taylor, hermite or foca there")
