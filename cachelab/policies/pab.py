"""Pyramid Attention Broadcast (Zhao et al. 2024, arXiv 2408.12588): attention outputs broadcast across steps."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

from ..tune.knobs import interval_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy

#: Which module role (``cachelab.units.ROLES``) each kind of attention of PAB decides for.
ROLE_OF = {"spatial": "attn", "cross": "cross_attn"}


class OneTimestepPerStep:
    """For module-unit policies that read the timestep: read it from the device once per step, not once per
    module (``ctx.scheduler_timestep`` is a host sync on a GPU)."""

    def reset(self) -> None:
        self._timestep: tuple[int, float] | None = None

    def step_timestep(self, ctx: StepContext) -> float:
        known = getattr(self, "_timestep", None)
        if known is None or known[0] != ctx.step:
            value = ctx.scheduler_timestep
            if value is None:
                raise ValueError(f"{type(self).__name__} needs the call's timestep; the transformer was called without one")
            known = self._timestep = (ctx.step, value)
        return known[1]


def timestep_range(name: str, value) -> tuple[float, float]:
    """A (low, high) pair of scheduler timesteps, low < high, as a tuple (a config gives a list)."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, Real) and not isinstance(v, bool)
                                                                          for v in value)):
        raise ValueError(f"{name} must be two numbers (low, high) of the scheduler's timesteps (0-1000), got {value!r}")
    if not value[0] < value[1]:
        raise ValueError(f"{name} must have low < high, got {tuple(value)!r}")
    return tuple(value)


@register_policy("pab")
@dataclass(eq=False, repr=False)
class PyramidAttentionBroadcast(OneTimestepPerStep, CachePolicy, Forecasts):
    """Recompute each attention module every ``*_block_skip_range`` steps and reuse its newest output in between,
    only while the scheduler's timestep lies strictly inside ``*_timestep_skip_range``; outside it, and at the
    first step, it computes. The feed-forward modules always run. Arguments as diffusers'
    ``PyramidAttentionBroadcastConfig``: spatial attention is the ``attn`` role of the model spec (self or joint
    attention), cross attention the ``cross_attn`` role (Wan's ``attn2``); ``None`` leaves that kind uncached.

    Temporal attention: no family cachelab supports has separate temporal blocks (diffusers finds them by the
    name ``temporal_transformer_blocks``), so the ``temporal_*`` arguments are accepted, checked, and match no
    module, as in diffusers on these models; set a spatial or cross range as well.

    Same decisions and outputs as diffusers' hook (``tests/test_module_policies.py``) where each module is called
    once per step. Where diffusers differs by design: its state is one per module, counted in calls and shared
    by the CFG branches, so with CFG in separate calls a skipped unconditional call returns the conditional
    output and the skip pattern counts both branches' calls; cachelab keeps one copy per branch and counts
    steps. diffusers also picks modules by name (``re.search`` of ``blocks``...), which reaches attention modules
    outside the model's blocks (HunyuanVideo's token refiner) and SD3.5's second self-attention ``attn2``;
    cachelab decides for the modules its model spec names in the blocks."""
    parity = ("diffusers PyramidAttentionBroadcastConfig: same decisions and images without CFG (tests/test_module_policies.py); "
              "with CFG cachelab keeps the branches apart")

    spatial_attention_block_skip_range: int | None = 2
    temporal_attention_block_skip_range: int | None = None
    cross_attention_block_skip_range: int | None = None
    spatial_attention_timestep_skip_range: tuple[float, float] = (100, 800)
    temporal_attention_timestep_skip_range: tuple[float, float] = (100, 800)
    cross_attention_timestep_skip_range: tuple[float, float] = (100, 800)
    tune_knob = interval_knob("spatial_attention_block_skip_range")  # what cachelab.tune searches

    unit = "module"

    def __post_init__(self) -> None:
        self._rules: dict[str, tuple[int, tuple[float, float]]] = {}  # role -> (skip range, timestep range)
        for kind in ("spatial", "temporal", "cross"):
            skip = getattr(self, f"{kind}_attention_block_skip_range")
            name = f"{kind}_attention_timestep_skip_range"
            setattr(self, name, timestep_range(name, getattr(self, name)))
            if skip is not None:
                check_number(f"{kind}_attention_block_skip_range", skip, minimum=1, integer=True)
                if kind in ROLE_OF:
                    self._rules[ROLE_OF[kind]] = (skip, getattr(self, name))
        if not self._rules:
            raise ValueError("PyramidAttentionBroadcast needs spatial_attention_block_skip_range or "
                             "cross_attention_block_skip_range (an integer >= 1); temporal attention matches no module "
                             "in the model families cachelab supports")
        self.roles = tuple(self._rules)

    def decide(self, ctx: StepContext) -> Decision:
        skip_range, (low, high) = self._rules[ctx.role]
        inside = low < self.step_timestep(ctx) < high
        if not ctx.computed_steps or ctx.step == 0 or not inside or ctx.step % skip_range == 0:
            return compute()
        return self.skip(ctx)
