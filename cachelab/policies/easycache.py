"""EasyCache (Zhou et al., arXiv 2507.02860; reference code github.com/H-EmbodVis/EasyCache): calibration-free,
runtime-adaptive reuse from the transformer's own transformation rate.

The rule, as the reference applies it to HunyuanVideo and Wan (``easycache_sample_video.py``,
``easycache_generate.py``): the first ``warmup_steps`` steps (the reference's ``ret_steps``: 5 on HunyuanVideo, 7 on
Wan2.2) and the last step compute and clear the sum. At a computed step, with x the transformer call's input latents
and o its output, the transformation rate k = mean|o - o_c| / mean|x - x_c| against the previous computed step c
(from the second computed step on). At any other step, once k exists, add k * mean|x - x_prev| / mean|o_c| (x_prev:
the previous step's input, computed or not; o_c: the newest computed output) to a sum; reuse while the sum stays
below ``threshold``, else compute and clear it. Thresholds there: 0.025 (HunyuanVideo), 0.05-0.06 (Wan2.2).

In cachelab terms x is the call's ``hidden_states`` argument (the ``call_input`` signal) and o the call's output
(``observe_output``, after the call). The stand-in is cachelab's: the residual of all blocks from the last computed step (or the
policy's ``forecaster``), where the reference adds the latent-space ``o - x`` of that step to the input. With CFG
the reference lets the conditional pass decide for both (``cfg_decisions=shared``); cachelab's default decides per
branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import parallel
from .base import CachePolicy, Decision, Forecasts, StepContext, check_number, compute
from .registry import register_policy


def mean_abs(tensor: torch.Tensor) -> float:
    """mean |tensor|; under context parallelism over every rank's shard (the sum and the count added up)."""
    if not parallel.reducing():
        return tensor.abs().float().mean().item()
    sums = parallel.reduce_sums(torch.stack([tensor.abs().double().sum(), torch.tensor(float(tensor.numel()), dtype=torch.float64)]))
    return float(sums[0] / sums[1])


@register_policy("easycache")
@dataclass(eq=False, repr=False)
class EasyCache(CachePolicy, Forecasts):
    """Compute the first ``warmup_steps`` steps and the last; after them add up k * mean|dx| / mean|o| per step (k:
    the output-to-input change rate measured between the last two computed steps, dx: the input's change since the
    previous step, o: the newest computed output) and reuse the residual of all blocks while the sum stays below
    ``threshold``; computing clears it. Calibration-free. Signal: the sum, up to and including this call (``None``
    where none is compared: warm-up, last step, before two steps computed)."""
    parity = ("none: no peer implementation; decisions follow the reference rule (H-EmbodVis/EasyCache) by hand "
              "(tests/test_easycache.py)")

    signals = ("call_input",)
    uses_threshold = True

    threshold: float = 0.05
    warmup_steps: int = 5

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold)
        check_number("warmup_steps", self.warmup_steps, integer=True)
        self.reset()

    @classmethod
    def tune_knob(cls, steps: int, blocks: int) -> tuple[str, tuple]:
        """The knob ``cachelab.tune`` should search and its values, safest first."""
        from ..tune.knobs import THRESHOLDS

        return "threshold", THRESHOLDS

    def reset(self) -> None:
        self.accumulated = 0.0
        self.rate: float | None = None  # k
        self.previous_input: torch.Tensor | None = None
        self.computed_input: torch.Tensor | None = None
        self.computed_output: torch.Tensor | None = None
        self.pending: torch.Tensor | None = None  # the input of the call in flight, when it computes

    def observe(self, computed_input: torch.Tensor, output: torch.Tensor) -> None:
        """A computed call's input and output: the transformation rate against the previous computed call."""
        if self.computed_output is not None and self.computed_input is not None:
            input_change = mean_abs(computed_input - self.computed_input)
            self.rate = mean_abs(output - self.computed_output) / input_change if input_change > 0 else None
        self.computed_input, self.computed_output = computed_input, output

    def observe_output(self, ctx: StepContext, output: torch.Tensor) -> None:
        if self.pending is not None:
            self.observe(self.pending, output.detach())
            self.pending = None

    def decide(self, ctx: StepContext) -> Decision:
        current, previous = ctx.signals["call_input"], self.previous_input
        self.previous_input = current
        decision = self._decide(ctx, current, previous)
        if decision.compute:
            self.pending = current
        return decision

    def _decide(self, ctx: StepContext, current: torch.Tensor, previous: torch.Tensor | None) -> Decision:
        if ctx.step < self.warmup_steps or ctx.is_last:
            self.accumulated = 0.0
            return compute()
        if previous is None or self.rate is None:
            return compute()
        output_size = mean_abs(self.computed_output)
        self.accumulated += self.rate * mean_abs(current - previous) / output_size if output_size > 0 else float("inf")
        accumulated = self.accumulated
        if accumulated < self.threshold:
            return self.skip(ctx, accumulated)
        self.accumulated = 0.0
        return compute(accumulated)
