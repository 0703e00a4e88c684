"""cachelab's policies against diffusers' own cache hooks on the same pipeline and seed."""

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig
from tiny import generate, run_cached

from cachelab import FirstBlockCache, MagCache
from cachelab.policies.magcache import FLUX_MAG_RATIOS

STEPS = 10
THRESHOLDS = (0.05, 0.2, 0.5, 1.0)
MODELS = [("flux", {}), ("cogview4", {"guidance_scale": 3.0})]


def last_block(transformer):
    lists = [transformer.transformer_blocks]
    if hasattr(transformer, "single_transformer_blocks"):
        lists.append(transformer.single_transformer_blocks)
    return lists[-1][-1]


def diffusers_decisions(pipe, config, kwargs):
    """Run a diffusers cache; a call computed iff a layer inside the last block ran."""
    decisions = []
    transformer = pipe.transformer
    on_call = transformer.register_forward_pre_hook(lambda *_: decisions.append(False))
    on_tail = next(last_block(transformer).children()).register_forward_pre_hook(lambda *_: decisions.__setitem__(-1, True))
    transformer.enable_cache(config)
    try:
        image = generate(pipe, steps=STEPS, **kwargs)
    finally:
        transformer.disable_cache()
        on_call.remove()
        on_tail.remove()
    return decisions, image


def run(pipe, policy, kwargs):
    image, executor = run_cached(pipe, policy, lambda: generate(pipe, steps=STEPS, **kwargs))
    return executor, image


@pytest.mark.parametrize("name, kwargs", MODELS)
def test_first_block_cache_matches_diffusers(request, name, kwargs):
    pipe = request.getfixturevalue(name)
    skipped = {}
    for threshold in THRESHOLDS:
        expected, reference = diffusers_decisions(pipe, FirstBlockCacheConfig(threshold=threshold), kwargs)
        executor, image = run(pipe, FirstBlockCache(threshold), kwargs)
        assert [r.computed for r in executor.trace] == expected, f"threshold {threshold}"
        assert (image - reference).abs().max().item() <= 1e-5
        skipped[threshold] = expected.count(False)
    assert skipped[0.05] == 0 and skipped[1.0] > 0, f"the thresholds must span computing and skipping: {skipped}"
    if "guidance_scale" in kwargs:
        assert {r.branch for r in executor.trace} == {"cond", "uncond"}


def test_the_default_threshold_is_diffusers_default():
    assert FirstBlockCache().threshold == FirstBlockCacheConfig().threshold == 0.05


def test_first_call_computes_and_change_is_measured_from_the_last_computed_step():
    from cachelab import StepContext

    policy = FirstBlockCache(threshold=0.15)
    residuals = [torch.ones(4), torch.full((4,), 1.1), torch.full((4,), 1.2), torch.full((4,), 1.05)]
    decisions = [policy.decide(StepContext(i, 4, "cond", signals={"head_residual": r})) for i, r in enumerate(residuals)]
    # 1.1 vs 1.0 -> 0.1 (reuse); 1.2 vs 1.0 -> 0.2 (compute); 1.05 vs 1.2 -> 0.125 (reuse)
    assert [d.compute for d in decisions] == [True, False, True, False]
    assert decisions[0].signal is None
    assert [round(d.signal, 6) for d in decisions[1:]] == [0.1, 0.2, 0.125]


@pytest.mark.parametrize("threshold, max_skip, retention", [(0.06, 3, 0.2), (0.3, 2, 0.0), (10.0, 3, 0.2)])
def test_magcache_matches_diffusers(flux, threshold, max_skip, retention):
    config = MagCacheConfig(threshold=threshold, max_skip_steps=max_skip, retention_ratio=retention,
                            num_inference_steps=STEPS, mag_ratios=list(FLUX_MAG_RATIOS))
    expected, reference = diffusers_decisions(flux, config, {})
    executor, image = run(flux, MagCache(threshold, max_skip, retention), {})
    assert [r.computed for r in executor.trace] == expected
    assert (image - reference).abs().max().item() <= 1e-5
    if threshold == 10.0:
        assert expected.count(False) > 0
