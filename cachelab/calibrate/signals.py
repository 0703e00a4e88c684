"""TeaCache's coefficients and MagCache's ratios, measured on any model.

TeaCache, the way its authors fit it: over full uncached generations, pair the relative L1 change of
the first block's modulated input (x) with that of the model output (y) at every step, then
``numpy.polyfit(x, y, degree)``. MagCache: per step, the mean ratio of the per-token norms of the
residual of all blocks to those of the previous step."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..engine import parallel
from ..engine.attach import attach, detach
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
    """Per-step magnitude ratios for ``MagCache(mag_ratios=...)``, averaged over prompts and branches.
    Under context parallelism each rank holds its tokens' norms: the ratios' sums and counts are added up."""
    executor = attach(pipe, NoCache())
    per_step: dict[int, list[float]] = defaultdict(list)
    try:
        with parallel.reducing_over(parallel.group_of(pipe.transformer)):
            for prompt in prompts:
                for residuals in executor.rehearse(lambda: pipe(prompt, **call_kwargs)).values():
                    norms = [torch.linalg.norm(residual.float(), dim=-1) for residual in residuals]
                    per_step[0].append(1.0)
                    for step in range(1, len(norms)):
                        ratios = norms[step] / (norms[step - 1] + 1e-8)
                        total, count = parallel.reduce_sums(torch.stack([ratios.double().sum(), torch.tensor(ratios.numel())]))
                        per_step[step].append(float(total / count))
    finally:
        detach(pipe)
    return [float(np.mean(per_step[step])) for step in sorted(per_step)]
