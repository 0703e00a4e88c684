"""ClusCa (Zheng et al., ACM MM 2025, arXiv 2509.10312): cluster-driven feature caching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tune.knobs import interval_knob
from . import token_rules as rules
from .base import Decision, StepContext, check_number, compute
from .registry import register_policy
from .toca import TokenPolicy


@register_policy("clusca")
@dataclass(eq=False, repr=False)
class ClusCa(TokenPolicy):
    """Cluster-driven caching: every module computes all tokens at the first ``first_enhance`` steps and every
    ``interval``-th step after (the published counter); at those full computations the runtime clusters each
    feed-forward module's input tokens by k-means (``cluster_count`` clusters, L1 distance, warm-started from the
    previous centroids). At the cached steps attention is forecast whole (``forecaster``, TaylorSeer's first order
    by default, as published), and each feed-forward computes one token drawn at random from every cluster; the
    computed tokens replace their kept outputs, and every token's kept output moves by ``propagation_ratio`` towards
    its cluster's computed one (gamma), before the forecaster's correction is added.

    Where cachelab differs: the published code clusters one block's output (Flux's block 18) and shares the labels
    over all blocks; here each module clusters its own input at its full computations. Text tokens compute in full."""
    parity = "none: no peer implementation; its rules match the published clusca-flux code, re-stated (tests/test_token_rules.py)"

    tune_knob = interval_knob("interval")  # what cachelab.tune searches
    interval: int = 5
    first_enhance: int = 3
    cluster_count: int = 16
    propagation_ratio: float = 0.007
    seed: int = 0
    forecaster: Any = field(default="taylor_diffusers", kw_only=True)

    token_signals = ("clusters",)

    def __post_init__(self) -> None:
        check_number("interval", self.interval, minimum=1, integer=True)
        check_number("first_enhance", self.first_enhance, minimum=1, integer=True)
        check_number("cluster_count", self.cluster_count, minimum=1, integer=True)
        check_number("propagation_ratio", self.propagation_ratio)
        check_number("seed", self.seed, integer=True)
        if self.propagation_ratio > 1:
            raise ValueError(f"propagation_ratio must be in [0, 1], got {self.propagation_ratio!r}")

    @property
    def history(self) -> int:
        return max(1, self.stand_in_rule.history)

    def reset(self) -> None:
        super().reset()
        self._counter = 0

    def plan_step(self, ctx: StepContext) -> str:
        if ctx.step < self.first_enhance or self._counter == self.interval - 1:
            self._counter = 0
            return "full"
        self._counter += 1
        return "clusca"

    def decide(self, ctx: StepContext) -> Decision:
        if self.kind(ctx) == "full" or not ctx.computed_steps or ctx.signals.get("age") is None:
            return compute()
        labels = ctx.signals.get("clusters")
        if ctx.role != "ff" or labels is None:
            return self.skip(ctx)
        return self.choose(ctx, rules.one_per_cluster(labels, self.cluster_count, self._generator))
