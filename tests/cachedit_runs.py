"""One generation under cache-dit and under cachelab, each described the same way: per CFG branch the steps it cached
and the residual changes it compared, and the images (the parity tests against cache-dit 1.5.3 share these)."""

import cache_dit
import torch
from diffusers import FluxPipeline

import cachelab
from cachelab import zoo


def plain_digits() -> FluxPipeline:
    """The digits model as a plain FluxPipeline: cache-dit recognises pipelines by class name."""
    pipe = FluxPipeline(**zoo.load_pipeline().components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def digits_at(steps: int):
    """``call(pipe)``: two digits at ``steps`` steps, seed 0, as numpy images."""
    def call(pipe):
        return pipe(zoo.prompts_for([3, 8]), height=32, width=32, max_sequence_length=8, num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(0), output_type="np").images
    return call


def cogview4_at(steps: int):
    """``call(pipe)``: the tiny CogView4 with true CFG at ``steps`` steps, seed 0."""
    def call(pipe):
        return pipe("a photo of a cat", height=32, width=32, num_inference_steps=steps, guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0), output_type="np").images
    return call


def cache_dit_run(make_pipe, call, config, calibrator=None):
    """``call(pipe)`` on a fresh ``make_pipe()`` with cache-dit's ``config`` (and ``calibrator``) enabled."""
    pipe = make_pipe()
    pipe.set_progress_bar_config(disable=True)
    cache_dit.enable_cache(pipe, cache_config=config, calibrator_config=calibrator)
    try:
        images = call(pipe)
        stats = cache_dit.summary(pipe, logging=False)[-1]
    finally:
        cache_dit.disable_cache(pipe)
    cached = {"cond": set(stats.cached_steps), "uncond": set(stats.cfg_cached_steps or [])}
    diffs = {"cond": {int(s): v for s, v in stats.residual_diffs.items()},
             "uncond": {int(s): v for s, v in (stats.cfg_residual_diffs or {}).items()}}
    return cached, diffs, images


def cachelab_run(pipe, call, policy):
    executor = cachelab.attach(pipe, policy)
    try:
        images = call(pipe)
    finally:
        cachelab.detach(pipe)
    branches = sorted({r.branch for r in executor.trace})
    cached = {b: {r.step for r in executor.trace if r.branch == b and not r.computed} for b in branches}
    diffs = {b: {r.step: r.signal for r in executor.trace if r.branch == b and r.signal is not None} for b in branches}
    return cached, diffs, images
