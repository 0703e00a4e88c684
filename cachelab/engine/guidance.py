"""Guidance without the unconditional pass: FasterCache's CFG part (Lv et al. 2024, arXiv 2410.19355).

At a step where both CFG branches run, the difference uncond - cond of the transformer's outputs is kept in two
bands of the centred 2-D spectrum over height and width (low: a disc of radius min(H, W) // 5 around the
centre; high: the rest). At the steps the policy names, the unconditional pass does not run: its output is the
conditional output plus the kept differences, each band's difference first scaled by its weight (the scaled
difference is kept, so consecutive such steps scale it again, as diffusers' FasterCache does).

Both ways pipelines run CFG: one call on the batch [uncond; cond] (CogVideoX, SD3: the call runs on the
cond half only) and separate calls (Wan, CogView4, HunyuanVideo: the uncond call is not made to the
blocks; it needs the cond call of its step first, as those pipelines make it).
"""

from __future__ import annotations

import copy

import torch

from ..models.specs import Arguments
from ..policies.base import UncondFromCond
from .clock import BRANCH_NAMES
from .units import block_unit


def bands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The centred 2-D spectrum of ``x`` over its last two dims, split into the low disc and the rest."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.float()))
    height, width = x.shape[-2:]
    rows = torch.arange(height, device=x.device)[:, None] - height // 2
    columns = torch.arange(width, device=x.device)[None, :] - width // 2
    disc = rows**2 + columns**2 <= (min(height, width) // 5) ** 2
    return spectrum * disc, spectrum * ~disc


def built_uncond(cond: torch.Tensor, differences: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    low, high = bands(cond)
    spectrum = (differences[0] + low) + (differences[1] + high)
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum)).real.to(cond.dtype)


def band_differences(uncond: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    (uncond_low, uncond_high), (cond_low, cond_high) = bands(uncond), bands(cond)
    return uncond_low - cond_low, uncond_high - cond_high


class Guidance:
    """The executor's CFG part for one generation: the kept band differences and, with separate calls, the
    step's conditional output."""

    def __init__(self, part: UncondFromCond, clock, pipeline, transformer, spec, blocks: int):
        self.part, self.clock, self.pipeline = part, clock, pipeline
        self.transformer, self.spec, self.blocks = transformer, spec, blocks
        self.reset()

    def reset(self) -> None:
        self.differences: tuple[torch.Tensor, torch.Tensor] | None = None
        self.cond: tuple[int, object] | None = None  # (step, the cond call's result), separate calls
        self.seen_uncond = False

    def batched(self) -> bool:
        """Whether this call carries both branches in one batch [uncond; cond]."""
        if self.clock.context_name in BRANCH_NAMES:  # the pipeline names its separate CFG calls
            return False
        pipeline = self.pipeline
        guided = getattr(pipeline, "do_classifier_free_guidance", None)
        if guided is None:  # CogVideoX and LTX decide it inside __call__ from guidance_scale
            guided = (getattr(pipeline, "guidance_scale", None) or 0) > 1
        return bool(guided)

    def run(self, call, original, args, kwargs):
        """The transformer call ``call`` with the CFG part: a separate uncond call may be built instead of run,
        a batched call may run on its cond half."""
        branch, step = call.context.branch, call.context.step
        batched = self.batched()
        if batched or branch == "uncond" or (branch == "cond" and self.seen_uncond):
            self._check()
            call.context.uncond_built = self.differences is not None and self.part.skips(step, call.context.scheduler_timestep)
        if batched:
            return self._batched(call, original, args, kwargs)
        if branch != "uncond":
            result = original(*args, **kwargs)
            if branch == "cond":
                self.cond = (step, result)
            return result
        self.seen_uncond = True
        kept_cond = self.cond[1] if self.cond is not None and self.cond[0] == step else None
        if call.context.uncond_built and kept_cond is not None:
            self.differences = self._scaled(call.context.scheduler_timestep)
            call.skipped += [block_unit(i) for i in range(self.blocks)]
            return with_sample(kept_cond, built_uncond(sample(kept_cond), self.differences))
        call.context.uncond_built = False
        result = original(*args, **kwargs)
        if kept_cond is not None:
            self.differences = band_differences(sample(result), sample(kept_cond))
        return result

    def _batched(self, call, original, args, kwargs):
        full = Arguments(self.transformer, args, kwargs)["hidden_states"].shape[0]
        if call.context.uncond_built:
            call.batch_share = 0.5
            halves = [cond_half(value, full) for value in args], {k: cond_half(v, full) for k, v in kwargs.items()}
            result = original(*halves[0], **halves[1])
            self.differences = self._scaled(call.context.scheduler_timestep)
            cond = sample(result)
            return with_sample(result, torch.cat([built_uncond(cond, self.differences), cond]))
        call.keeps_cond_half = True
        result = original(*args, **kwargs)
        self.differences = band_differences(*sample(result).chunk(2))
        return result

    def _scaled(self, timestep: float) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.part.weights(timestep)
        return self.differences[0] * low, self.differences[1] * high

    def _check(self) -> None:
        if not self.spec.image_outputs:
            raise ValueError(
                f"FasterCache's CFG part splits the transformer's output into 2-D frequency bands, and the "
                f"{self.spec.family} transformer returns packed tokens; pass is_guidance_distilled=True "
                "to run its attention part only"
            )


def cond_half(value, full: int):
    """The cond half of a batched CFG argument (a tensor whose first dim is the full batch); others as they are."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == full:
        return value.chunk(2)[1]
    return value


def cond_halves(output):
    """A module's output at a batched CFG step, cut to its cond half (what FasterCache's attention keeps)."""
    if isinstance(output, tuple):
        return tuple(cond_halves(value) for value in output)
    return output.chunk(2)[1] if isinstance(output, torch.Tensor) else output


def sample(result) -> torch.Tensor:
    return result if isinstance(result, torch.Tensor) else result[0]


def with_sample(result, tensor: torch.Tensor):
    """``result`` (a tensor, a tuple or a diffusers output) with ``tensor`` as its sample."""
    if isinstance(result, torch.Tensor):
        return tensor
    if isinstance(result, tuple):
        return (tensor, *result[1:])
    result = copy.copy(result)
    result.sample = tensor
    return result
