"""DuCa (Zou et al. 2024, arXiv 2412.18911): dual feature caching, aggressive and conservative steps alternating."""

from __future__ import annotations

from dataclasses import dataclass

from ..tune.knobs import interval_knob
from . import token_rules as rules
from .base import Decision, StepContext, check_number, compute
from .registry import register_policy
from .toca import TokenPolicy

DUCA_SCORES = ("random", "norm", "similarity")


@register_policy("duca")
@dataclass(eq=False, repr=False)
class DuCa(TokenPolicy):
    """Dual caching: every module computes all tokens at the first ``first_enhance`` steps and every ``interval``-th
    step after; the cached steps between alternate, starting after each full step, an aggressive one (every module
    reuses, or forecasts, its whole kept output) and a conservative one (each module computes the ``fresh_ratio``
    share of its tokens, chosen without attention maps: ``score`` ``random``, as the paper finds enough, or ``norm``
    / ``similarity`` as ToCa's; plus ToCa's cache-age term ``soft_fresh_weight``). The paper's V-norm score reads
    the attention's values, which a feed-forward module has not: not offered."""
    parity = "none: no peer implementation; its alternation matches the published rule, re-stated (tests/test_token_rules.py)"

    tune_knob = interval_knob("interval")  # what cachelab.tune searches
    interval: int = 5
    fresh_ratio: float = 0.1
    first_enhance: int = 1
    score: str = "random"
    soft_fresh_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("interval", self.interval, minimum=1, integer=True)
        check_number("first_enhance", self.first_enhance, minimum=1, integer=True)
        check_number("fresh_ratio", self.fresh_ratio)
        if self.fresh_ratio > 1:
            raise ValueError(f"fresh_ratio must be a share of the tokens in [0, 1], got {self.fresh_ratio!r}")
        check_number("soft_fresh_weight", self.soft_fresh_weight)
        check_number("seed", self.seed, integer=True)
        if self.score not in DUCA_SCORES:
            raise ValueError(f"score must be one of {', '.join(DUCA_SCORES)} (no attention maps), got {self.score!r}")
        self.token_signals = {"similarity": ("input", "kept", "input_change"), "norm": ("input",), "random": ()}[self.score]

    def reset(self) -> None:
        super().reset()
        self._counter = 0

    def plan_step(self, ctx: StepContext) -> str:
        """The counter form of the published ``cal_type``: full at the first steps and when the counter reaches
        ``interval - 1``; else the counter's parity: even aggressive, odd conservative."""
        if ctx.step < self.first_enhance or self._counter == self.interval - 1:
            self._counter = 0
            return "full"
        kind = "conservative" if self._counter % 2 == 1 else "aggressive"
        self._counter += 1
        return kind

    def decide(self, ctx: StepContext) -> Decision:
        kind = self.kind(ctx)
        if kind == "full" or not ctx.computed_steps or ctx.signals.get("age") is None:
            return compute()
        if kind == "aggressive":
            return self.skip(ctx)
        score = rules.base_score(self.score, ctx.signals, self._generator).to(ctx.signals["age"].device)
        score = score + self.soft_fresh_weight * ctx.signals["age"].float() / self.interval
        return self.choose(ctx, rules.top_tokens(score, self.fresh_ratio))
