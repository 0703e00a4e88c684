"""TeaCache's coefficients and MagCache's ratios, measured on any model.

TeaCache, the way its authors fit it: over full uncached generations, pair the relative L1 change of
the first block's modulated input (x) with that of the model output (y) at every step, then
``numpy.polyfit(x, y, degree)``. MagCache: per step, the mean ratio of the per-token norms of the
residual of all blocks to those of the previous step."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..executor import attach, detach
from ..models.specs import Arguments
from ..policies.base import CachePolicy, Decision, StepContext, compute, relative_l1
from ..policies.no_cache import NoCache


class _ModulatedInputProbe(CachePolicy):
    """Computes every step and reports the modulated input's relative change as its signal."""

    signals = ("modulated_input",)
    caches = False

    def reset(self) -> None:
        self.previous = None

    def decide(self, ctx: StepContext) -> Decision:
        current, previous = ctx.signals["modulated_input"], self.previous
        self.previous = current
        return compute(None if previous is None else relative_l1(current, previous))


def _output_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return output[0] if isinstance(output, tuple) else output.sample


def signal_pairs(pipe, prompts, **call_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) over every step after the first of every branch of one generation per prompt."""
    xs, ys = [], []
    outputs: list[torch.Tensor] = []
    hook = pipe.transformer.register_forward_hook(lambda module, args, out: outputs.append(_output_tensor(out)))
    executor = attach(pipe, _ModulatedInputProbe())
    try:
        for prompt in prompts:
            outputs.clear()
            pipe(prompt, **call_kwargs)
            previous: dict[str, torch.Tensor] = defaultdict(lambda: None)
            for record, output in zip(executor.trace, outputs):
                if previous[record.branch] is not None:
                    xs.append(record.signal)
                    ys.append(relative_l1(output, previous[record.branch]))
                previous[record.branch] = output
    finally:
        detach(pipe)
        hook.remove()
    return np.asarray(xs), np.asarray(ys)


def teacache_coefficients(pipe, prompts, degree: int = 4, **call_kwargs) -> list[float]:
    """Polynomial coefficients (highest degree first) for ``TeaCache(coefficients=...)``."""
    x, y = signal_pairs(pipe, prompts, **call_kwargs)
    if len(x) <= degree:
        raise ValueError(f"{len(x)} step pairs cannot fit a degree-{degree} polynomial; use more prompts or steps")
    return np.polyfit(x, y, degree).tolist()


def magcache_ratios(pipe, prompts, **call_kwargs) -> list[float]:
    """Per-step magnitude ratios for ``MagCache(mag_ratios=...)``, averaged over prompts and branches."""
    executor = attach(pipe, NoCache())
    (first, _), (last, last_output) = executor.blocks[0], executor.blocks[-1]
    inputs, residuals = [], []

    def keep_input(block, args, kwargs):
        inputs.append(Arguments(block, args, kwargs)["hidden_states"])

    def keep_residual(block, args, output):
        residuals.append(last_output.unpack(output)[0] - inputs[-1])

    hooks = [
        first.register_forward_pre_hook(keep_input, with_kwargs=True),
        last.register_forward_hook(keep_residual),
    ]
    per_step: dict[int, list[float]] = defaultdict(list)
    try:
        for prompt in prompts:
            residuals.clear()
            pipe(prompt, **call_kwargs)
            previous: dict[str, torch.Tensor] = {}
            for record, residual in zip(executor.trace, residuals):
                norm = torch.linalg.norm(residual.float(), dim=-1)
                before = previous.get(record.branch)
                ratio = 1.0 if before is None else (norm / (before + 1e-8)).mean().item()
                per_step[record.step].append(ratio)
                previous[record.branch] = norm
    finally:
        detach(pipe)
        for hook in hooks:
            hook.remove()
    return [float(np.mean(per_step[step])) for step in sorted(per_step)]

