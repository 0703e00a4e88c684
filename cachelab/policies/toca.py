"""ToCa (Zou et al., ICLR 2025, arXiv 2410.05317): token-wise feature caching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..tune.knobs import interval_knob
from . import token_rules as rules
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy


class TokenPolicy(CachePolicy, Forecasts):
    """What the token policies share: ``unit = "token"``, a per-step plan computed once per step (not per module),
    a seeded generator for random choices, and the checks of the knobs they share."""

    unit = "token"
    roles: ClassVar[tuple[str, ...]] = ("attn", "ff")
    token_signals: ClassVar[tuple[str, ...]] = ()

    def reset(self) -> None:
        self._planned: int | None = None
        self._kind = "full"
        self._generator = torch.Generator().manual_seed(int(getattr(self, "seed", 0)))

    def kind(self, ctx: StepContext) -> str:
        """This step's kind (``full`` or the policy's cached kinds), planned at the step's first unit."""
        if getattr(self, "_planned", None) != ctx.step:
            if not hasattr(self, "_generator"):
                self.reset()
            if ctx.num_steps is None:
                raise ValueError(f"{type(self).__name__} schedules by the step's place in the generation; the number of steps "
                                 "is unknown (attach with the pipeline's scheduler, or num_steps=...)")
            self._kind, self._planned = self.plan_step(ctx), ctx.step
        return self._kind

    def plan_step(self, ctx: StepContext) -> str:
        raise NotImplementedError

    def choose(self, ctx: StepContext, tokens: torch.Tensor) -> Decision:
        """Compute ``tokens`` of the unit; none: stand in for the whole unit (module-level reuse or forecast)."""
        if tokens.shape[1] == 0:
            return self.skip(ctx)
        return Decision(True, float(tokens.shape[1]) / ctx.signals["count"], tokens=tokens)


def module_kind(role: str) -> str:
    return "mlp" if role == "ff" else "attn"


@register_policy("toca")
@dataclass(eq=False, repr=False)
class ToCa(TokenPolicy):
    """Token-wise caching (ToCa). Every module computes all tokens at the first step and at the force-activation steps
    (every ``fresh_threshold`` steps, the interval stretched over the generation and 2 in its sensitive 20-40%:
    ``token_rules.force_threshold``); between them each module computes the ``fresh_ratio`` share of its tokens
    (scheduled by step, layer and module: ``ratio_schedule``; ``ToCa-ddim50`` gives attention none, so attention is
    reused whole and the feed-forward computes more, as the published setting) with the best scores, and reuses
    (or, with ``forecaster``, forecasts) the others' kept outputs.

    Score: ``score`` (s1: ``similarity``, ``norm`` or ``random``; ``attention``, the attention-map score, needs
    attention weights, which no supported family's processor returns: refused at attach) + ``soft_fresh_weight`` x
    the token's cache age / ``fresh_threshold`` (s3) + ``spatial_bonus`` for the best token of every
    ``spatial_grid`` x ``spatial_grid`` cell of a square token grid (s4; token counts that are no square grid, a
    video's, get none; refused on context-parallel shards). Defaults: the published DiT settings (ratio 0.07, N 4,
    lambda3 0.25, bonus 0.6 on 2 x 2 cells)."""
    parity = "none: no peer implementation; its rules match Shenyi-Z/ToCa's code, re-stated (tests/test_token_rules.py)"

    tune_knob = interval_knob("fresh_threshold")  # what cachelab.tune searches: the full-computation period
    fresh_ratio: float = 0.07
    fresh_threshold: int = 4
    ratio_schedule: str = "ToCa-ddim50"
    score: str = "similarity"
    soft_fresh_weight: float = 0.25
    spatial_bonus: float = 0.6
    spatial_grid: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("fresh_ratio", self.fresh_ratio)
        if self.fresh_ratio > 1:
            raise ValueError(f"fresh_ratio must be a share of the tokens in [0, 1], got {self.fresh_ratio!r}")
        check_number("fresh_threshold", self.fresh_threshold, minimum=1, integer=True)
        check_number("soft_fresh_weight", self.soft_fresh_weight)
        check_number("spatial_bonus", self.spatial_bonus)
        check_number("spatial_grid", self.spatial_grid, minimum=1, integer=True)
        check_number("seed", self.seed, integer=True)
        if self.ratio_schedule not in rules.RATIO_SCHEDULES:
            raise ValueError(f"ratio_schedule must be one of {', '.join(rules.RATIO_SCHEDULES)}, got {self.ratio_schedule!r}")
        if self.score not in rules.SCORES:
            raise ValueError(f"score must be one of {', '.join(rules.SCORES)}, got {self.score!r}")
        needs = {"similarity": ("input", "kept", "input_change"), "norm": ("input",), "random": (), "attention": ("attention_map",)}
        self.token_signals = needs[self.score]

    def plan_step(self, ctx: StepContext) -> str:
        n = ctx.num_steps
        if ctx.step == 0 or rules.down(ctx.step, n) % getattr(self, "_threshold", self.fresh_threshold) == 0:
            self._threshold = rules.force_threshold(self.fresh_threshold, ctx.step, n, self.fresh_ratio)
            return "full"
        return "toca"

    def decide(self, ctx: StepContext) -> Decision:
        if self.kind(ctx) == "full" or not ctx.computed_steps or ctx.signals.get("age") is None:
            return compute()
        if self.spatial_bonus and ctx.signals.get("sharded"):
            raise ValueError("ToCa's spatial bonus (s4) needs the whole token grid; under context parallelism each rank "
                             "holds a shard of it: set spatial_bonus=0")
        ratio = rules.fresh_ratio(self.ratio_schedule, self.fresh_ratio, ctx.step, ctx.num_steps, ctx.block or 0,
                                  ctx.num_blocks or 1, module_kind(ctx.role))
        if int(min(max(ratio, 0.0), 1.0) * ctx.signals["count"]) == 0:
            return self.skip(ctx)
        score = rules.base_score(self.score, ctx.signals, self._generator).to(ctx.signals["age"].device)
        score = score + self.soft_fresh_weight * ctx.signals["age"].float() / self.fresh_threshold
        score = rules.local_selection_with_bonus(score, self.spatial_bonus, self.spatial_grid)
        return self.choose(ctx, rules.top_tokens(score, ratio))
