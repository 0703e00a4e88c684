"""FORA (Selvaraju et al. 2024, arXiv 2407.01425): the attention and MLP outputs of every block cached for N steps."""

from __future__ import annotations

from dataclasses import dataclass

from ..tune.knobs import interval_knob
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy


@register_policy("fora")
@dataclass(eq=False, repr=False)
class Fora(CachePolicy, Forecasts):
    """Fast-FORward cAching, FORA's static caching: every attention module (self, joint and cross attention) and
    every feed-forward of every block recomputes its output at the first ``warmup_steps`` steps and then every
    ``interval``-th step (``(step - warmup_steps) % interval == 0``), and reuses that output for the ``interval - 1``
    steps after it; the rest of each block (norms, modulation, residual adds) runs at every step. No forced last
    step, as published. ``interval=1`` computes everything (the uncached images exactly, tested). The paper's
    DiT/PixArt-alpha results use intervals 2 to 7."""
    parity = "none: no peer implementation; interval=1 is the uncached output exactly (tests/test_module_policies.py)"

    interval: int = 3
    warmup_steps: int = 0
    tune_knob = interval_knob("interval")  # what cachelab.tune searches

    unit = "module"
    roles = ("attn", "cross_attn", "ff")

    def __post_init__(self) -> None:
        check_number("interval", self.interval, minimum=1, integer=True)
        check_number("warmup_steps", self.warmup_steps, integer=True)

    def decide(self, ctx: StepContext) -> Decision:
        if not ctx.computed_steps:
            return compute()
        after_warmup = ctx.step - self.warmup_steps
        return compute() if after_warmup < 0 or after_warmup % self.interval == 0 else self.skip(ctx)
