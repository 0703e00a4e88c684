"""cachelab's DBCache against cache-dit itself (the package, DBCacheConfig and its TaylorSeer
calibrator) on the tiny Flux model: the same computed/cached steps, the same residual changes and the
same images for the same seed.

cache-dit patches the pipeline's class (``FluxPipeline.__call__``) and the transformer, so every
cache-dit run gets a pipeline of its own and is disabled before the run returns; cachelab runs on the
session fixture, built from the same seed.
"""

import cache_dit
import pytest
import torch
from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig
from diffusers import FluxPipeline
from tiny import flux_pipeline, generate

import cachelab
from cachelab import DualBlockCache

STEPS = 10


def cache_dit_run(cache_config, calibrator_config=None):
    """One generation under cache-dit. Returns per step whether it computed the blocks, the relative
    L1 change it compared per step (``{step: value}``, steps it did not compare are absent), the images."""
    pipe = flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    # A check independent of cache-dit's stats: a step computed iff a middle block ran (block 3 of 5,
    # neither a head nor a tail block in any case here).
    middle_block = transformer.single_transformer_blocks[-2]
    ran_middle = []
    hooks = [
        transformer.register_forward_pre_hook(lambda *_: ran_middle.append(False)),
        middle_block.register_forward_pre_hook(lambda *_: ran_middle.__setitem__(-1, True)),
    ]
    plain_call = FluxPipeline.__call__
    cache_dit.enable_cache(pipe, cache_config=cache_config, calibrator_config=calibrator_config)
    try:
        image = generate(pipe, steps=STEPS)
        # Public API: the stats cache-dit records after each pipeline call. cached_steps counts
        # denoising steps; Flux makes one transformer call per step.
        stats = cache_dit.summary(pipe, logging=False)[-1]
    finally:
        cache_dit.disable_cache(pipe)
        for hook in hooks:
            hook.remove()
    assert FluxPipeline.__call__ is plain_call, "cache-dit left FluxPipeline.__call__ patched"
    computed = [step not in stats.cached_steps for step in range(STEPS)]
    assert computed == ran_middle, "cache-dit's cached_steps disagree with the blocks that ran"
    diffs = {int(step): value for step, value in stats.residual_diffs.items()}
    return computed, diffs, image


def cachelab_run(pipe, policy):
    executor = cachelab.attach(pipe, policy)
    try:
        image = generate(pipe, steps=STEPS)
    finally:
        cachelab.detach(pipe)
    computed = [record.computed for record in executor.trace]
    diffs = {record.step: record.signal for record in executor.trace if record.signal is not None}
    return computed, diffs, image


def assert_same_run(expected, actual, warmup):
    (expected_computed, expected_diffs, expected_image) = expected
    (computed, diffs, image) = actual
    after_warmup = expected_computed[warmup:]
    assert True in after_warmup and False in after_warmup, (
        f"the threshold must both compute and skip after the warm-up: {expected_computed}")
    assert computed == expected_computed
    assert diffs == pytest.approx(expected_diffs, rel=1e-4, abs=1e-6)
    torch.testing.assert_close(image, expected_image, atol=1e-5, rtol=1e-5)


def dbcache_config(threshold, warmup, compute_first=1, compute_last=0, **limits):
    return DBCacheConfig(
        Fn_compute_blocks=compute_first, Bn_compute_blocks=compute_last, max_warmup_steps=warmup,
        residual_diff_threshold=threshold, **limits,
    )


# (threshold, warmup_steps, compute_first, compute_last, limits); on the tiny model the per-step
# relative L1 of block 0's residual is about 0.25-0.7, so these thresholds cache some steps.
PLAIN = [
    pytest.param(0.4, 0, 1, 0, {}, id="F1B0-W0"),  # computes 0, 1, 3, 5, 6, 8
    pytest.param(0.5, 4, 1, 0, {}, id="F1B0-W4"),  # computes 0-3, 8
    pytest.param(0.5, 0, 1, 0, {"max_cached_steps": 3, "max_continuous_cached_steps": 2}, id="F1B0-W0-limits"),
    pytest.param(0.45, 2, 1, 1, {}, id="F1B1-W2"),
]


@pytest.mark.parametrize("threshold, warmup, first, last, limits", PLAIN)
def test_dbcache_matches_cache_dit(flux, threshold, warmup, first, last, limits):
    expected = cache_dit_run(dbcache_config(threshold, warmup, first, last, **limits))
    policy = DualBlockCache(
        threshold, compute_first=first, compute_last=last, warmup_steps=warmup,
        max_cached_steps=limits.get("max_cached_steps", -1),
        max_continuous_cached_steps=limits.get("max_continuous_cached_steps", -1),
    )
    assert_same_run(expected, cachelab_run(flux, policy), warmup)


# (taylor order, threshold, warmup_steps). cache-dit takes a derivative only on a computed step >= 3
# (counting every transformer call of the branch, cached or not) and reuses the residual as is until
# one exists. W4 (computes 0-3, 8): steps 4-7 are forecast from the derivative taken at step 3
# (window 1), step 9 from the one taken at step 8 (window 5); order 2 has its first second derivative
# at step 8, not 3. W3 (computes 0-2, 5): steps 3-4 reuse step 2's residual as is, steps 6-9 are
# forecast with the derivative taken at step 5 (window 3). W0 (computes 0, 1, 3, 5, 6, 8): step 2
# reuses, step 3 takes the first derivative (window 2), order 2 its first second derivative at step 5.
TAYLOR = [
    pytest.param(1, 0.5, 4, id="O1-W4"),
    pytest.param(2, 0.5, 4, id="O2-W4"),
    pytest.param(1, 0.5, 3, id="O1-W3"),
    pytest.param(1, 0.4, 0, id="O1-W0"),
    pytest.param(2, 0.4, 0, id="O2-W0"),
]


@pytest.mark.parametrize("order, threshold, warmup", TAYLOR)
def test_dbcache_with_taylorseer_matches_cache_dit(flux, order, threshold, warmup):
    expected = cache_dit_run(
        dbcache_config(threshold, warmup), TaylorSeerCalibratorConfig(taylorseer_order=order)
    )
    policy = DualBlockCache(threshold, compute_first=1, compute_last=0, warmup_steps=warmup, taylor_order=order)
    assert_same_run(expected, cachelab_run(flux, policy), warmup)
    # The forecast matters at this tolerance: reusing the residual as is gives another image.
    _, _, reused = cachelab_run(flux, DualBlockCache(threshold, compute_first=1, compute_last=0, warmup_steps=warmup))
    assert (reused - expected[2]).abs().max().item() > 1e-3


def test_taylorseer_forecasts_the_text_stream_too(flux):
    """With a tail block the text stream's cached residual reaches the output; cache-dit's
    TaylorSeerCalibratorConfig forecasts it as well (enable_encoder_calibrator defaults to True)."""
    config = TaylorSeerCalibratorConfig(taylorseer_order=1)
    assert config.enable_calibrator and config.enable_encoder_calibrator
    expected = cache_dit_run(dbcache_config(0.5, 4, compute_last=1), config)
    policy = DualBlockCache(0.5, compute_first=1, compute_last=1, warmup_steps=4, taylor_order=1)
    assert_same_run(expected, cachelab_run(flux, policy), 4)
